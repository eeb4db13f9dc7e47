"""Conversations across restarts, counted (issue 20): retry rounds and added delay per case of the issue's
table, for the config-var store (server hands out pre-keys lowest id first, or at random) and PostgreSQL.

Run: .venv/bin/python bench/bench_continuity.py [--baseline DIR] [--after DIR] [--restarts N] [--no-postgres]

The real bot (a checkout's Procfile command, real neonize) against the WhatsApp simulator (tests/wasim),
whose peers keep their Signal sessions and answer retry receipts as whatsmeow's handleRetryReceipt does;
the conversation is tests/support/continuity.py's (pair, chat, then N restarts each restoring what the
store holds). `--baseline DIR` runs the same conversations against another checkout of the bot in the
same run (e.g. `git archive main | tar -x -C /tmp/today`), so before and after are side by side;
`--after DIR` measures another checkout instead of this one (a branch not merged yet). The delay is
from the peer's send to the webhook POST on loopback: the simulated peer answers a retry receipt at
once, so on WhatsApp each round adds a network round trip to both phones on top of it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.figures import Figure  # noqa: E402
from tests.support.continuity import SIM_PHONE, ConfigVarStore, Conversation, PostgresStore, Run  # noqa: E402
from tests.support.postgres import PostgresServer, ServerUnavailable  # noqa: E402
from tests.support.simulator import WebhookReceiver, running_sim  # noqa: E402

ROWS = [("established", "a peer that chatted before sends again"),
        ("bot_first", "the bot writes first, then the peer answers"),
        ("new_within", "a new peer, its key kept by the restore"),
        ("new_beyond", "a new peer, its key not kept"),
        ("old_client", "a peer that ignores retries (arrived?)"),
        ("group", "a group member's message")]


def converse(order: str, store_name: str, checkout: Path | None, restarts: int, pg: PostgresServer | None,
             tag: str) -> Run:
    run = Run(store_name)
    with tempfile.TemporaryDirectory(prefix="bench-continuity-") as tmp:
        receiver = WebhookReceiver().start()
        try:
            with running_sim(str(Path(tmp) / "wasim"), phone_number=SIM_PHONE, prekey_order=order,
                             prekey_seed=20) as sim:
                if store_name == "postgres":
                    store = PostgresStore(sim, Path(tmp) / "pg", receiver, pg.create_database(f"bench_{tag}"),
                                          checkout=checkout)
                else:
                    store = ConfigVarStore(sim, Path(tmp) / "cv", receiver, checkout=checkout)
                conversation = Conversation(sim, store, receiver, tag="7", restarts=restarts)
                run = conversation.run  # what was measured so far, should a step fail
                try:
                    run = conversation.play()
                finally:
                    store.close()
        except (AssertionError, TimeoutError) as exc:  # a step that failed, or what the simulator could
            print(f"  stopped: {str(exc)[:600]}")  # not read: a figure too, not a crash
        finally:
            receiver.stop()
    return run


def summary(run: Run, case: str) -> str:
    found = run.of(case)
    if not found:
        return "-"
    rounds = [d.rounds for d in found]
    delays = [d.delay for d in found if d.delay is not None]
    arrived = sum(d.arrived for d in found)
    delay = f"{statistics.median(delays):.2f}s" if delays else "-"
    return f"{statistics.mean(rounds):.1f} rounds, {delay}, {arrived}/{len(found)} in"


README: dict = {}  # the README quotes none of these figures (tests/test_bench.py checks what it does quote)


def figures(quick: bool = False, baseline: Path | None = None) -> list[Figure]:
    """Mean retry rounds per case after the restarts, this checkout against `baseline` (another checkout,
    same run; without it, no baseline). Full: 3 restarts on the config var (keys handed out lowest id
    first) and PostgreSQL; quick: 1 restart, the config var only."""
    restarts = 1 if quick else 3
    setups = [("config var", "lowest", "config-var")] + ([] if quick else [("postgres", "lowest", "postgres")])
    pg = None
    if not quick:
        pg = PostgresServer()
        try:
            pg.start()
        except (ServerUnavailable, OSError):
            pg, setups = None, setups[:1]
    label = f"--baseline {baseline}" if baseline else "--baseline DIR not given"
    rows = []
    try:
        for n, (setup, order, store) in enumerate(setups):
            ours = converse(order, store, None, restarts, pg, tag=f"t{n}")
            base = converse(order, store, baseline.resolve(), restarts, pg, tag=f"b{n}") if baseline else None
            for case, words in ROWS:
                found = ours.of(case)
                value = statistics.mean(d.rounds for d in found) if found else None
                base_found = base.of(case) if base else []
                rows.append(Figure(f"retry rounds after {restarts} restart(s), {setup}: {words}", value, "",
                                   label, statistics.mean(d.rounds for d in base_found) if base_found else None,
                                   README.get(case, "-"), note="" if found else "not measured (a step failed)"))
    finally:
        if pg is not None:
            pg.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="another checkout of the bot, measured in the same run")
    parser.add_argument("--after", type=Path, help="measure this checkout of the bot instead of this one")
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()

    pg = None
    if not args.no_postgres:
        pg = PostgresServer()
        try:
            pg.start()
        except (ServerUnavailable, OSError) as exc:
            print(f"PostgreSQL unavailable, its column is skipped: {exc}")
            pg = None
    after = ("after: " + str(args.after), args.after.resolve()) if args.after else ("this checkout", None)
    checkouts = [after] + ([("baseline: " + str(args.baseline), args.baseline.resolve())] if args.baseline else [])
    setups = [("config var, lowest first", "lowest", "config-var"), ("config var, random", "random", "config-var")]
    if pg is not None:
        setups.append(("postgres", "lowest", "postgres"))
    results = {}
    try:
        for i, (label, checkout) in enumerate(checkouts):
            for n, (setup, order, store) in enumerate(setups):
                print(f"running: {label} / {setup} ...", flush=True)
                results[(label, setup)] = converse(order, store, checkout, args.restarts, pg, tag=f"{i}_{n}")
    finally:
        if pg is not None:
            pg.stop()

    print(f"\nAfter each of {args.restarts} restarts (mean retry rounds, median delay to the webhook, arrived):")
    for label, _ in checkouts:
        print(f"\n{label}")
        header = f"  {'case':44}" + "".join(f"{s[0]:>34}" for s in setups)
        print(header)
        for case, words in ROWS:
            print(f"  {words:44}" + "".join(f"{summary(results[(label, s[0])], case):>34}" for s in setups))
        sends = [f"{sum(x.read for x in results[(label, s[0])].sends)}/{len(results[(label, s[0])].sends)}"
                 for s in setups]
        print(f"  {'bot sends read by the peer / every member':44}" + "".join(f"{x:>34}" for x in sends))
        spent = [str(results[(label, s[0])].peer_keys_spent_after_restarts) for s in setups]
        print(f"  {'peer one-time keys the bot spent':44}" + "".join(f"{x:>34}" for x in spent))
        kept = [",".join(map(str, results[(label, s[0])].kept_unused_keys)) or "all" for s in setups]
        print(f"  {'unused server keys each restore held':44}" + "".join(f"{x:>34}" for x in kept))
        said = [str(len(results[(label, s[0])].undecryptable_events)) for s in setups]
        print(f"  {'undecryptable webhook events (every attempt)':44}" + "".join(f"{x:>34}" for x in said))
    return 0


if __name__ == "__main__":
    sys.exit(main())
