"""Saving under pressure, counted (issue 13): what 10 parallel forced saves cost in Platform API writes,
and what a hanging Platform API does to the save's answer and to the health check meanwhile.

Run: .venv/bin/python bench/bench_saving.py [--baseline DIR]

A real gunicorn bot (the checkout's Procfile command) with the scripted WhatsApp client, the fake
Platform API of the tests on loopback. `--baseline DIR` runs the same against another checkout of the
bot in the same run (e.g. `git worktree add /tmp/landed <commit>`), so the figures are side by side.
The hanging phase: every Platform API call hangs for 45 s; 10 saves are sent at once (each client gives
up after 35 s, as Heroku's router does at 30 s) while /api/health is asked every 0.2 s.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.figures import Figure  # noqa: E402
from tests.support.fake_heroku import FakeHeroku  # noqa: E402
from tests.support.harness import VENV_BIN, BotProcess, base_env  # noqa: E402
from tests.support.scripted_client import Control  # noqa: E402

APP, TOKEN, API_KEY = "bench-saving", "hrku-bench-saving-token-7d1e", "bench-saving-key-4c2f9a1e"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
PARALLEL = 10


def command_of(checkout: Path) -> list[str]:
    for line in (checkout / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            words = shlex.split(line[4:].strip())
            return [str(VENV_BIN / words[0]), *words[1:]]
    raise SystemExit(f"{checkout}/Procfile has no web: line")


def in_parallel(count: int, call) -> list[tuple[float, object]]:
    results: list = [None] * count
    gate = threading.Barrier(count)

    def run(i: int) -> None:
        gate.wait()
        started = time.monotonic()
        try:
            outcome = call()
        except OSError as exc:  # the client gave up (timeout)
            outcome = (None, type(exc).__name__)
        results[i] = (time.monotonic() - started, outcome)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def measure(checkout: Path, deadline: float | None = None) -> dict:
    """`deadline`: SAVE_DEADLINE for the bot (None: its default, 20 s); the API then hangs 25 s longer."""
    hang = 45 if deadline is None else deadline + 25
    with tempfile.TemporaryDirectory() as tmp:
        heroku = FakeHeroku(app_name=APP, token=TOKEN).start()
        heroku.preset({"HEROKU_API_KEY": TOKEN, "HEROKU_APP_NAME": APP, "API_KEY": API_KEY,
                       "SESSION_SAVE_DELAY": "600", **({} if deadline is None else {"SAVE_DEADLINE": str(deadline)})})
        control = Control(Path(tmp) / "control")
        support = (checkout / "tests" / "support" / "scripted_client.py").exists()
        env = base_env(**heroku.vars, SESSION_DIR=str(Path(tmp) / "session"), HEROKU_API_URL=heroku.url,
                       WHATSAPP_CLIENT_FACTORY=("tests.support.scripted_client:factory" if support
                                                else "tests.scripted_client:factory"),
                       SCRIPTED_WA_DIR=str(control.dir), PYTHONPATH=str(checkout))
        bot = BotProcess(env, cwd=checkout, command=command_of(checkout)).start()
        try:
            bot.wait_for_line("WHATSAPP QR", timeout=60)
            control.send("pair", seed=71)
            bot.wait_state("connected", timeout=60)  # a save right away must find the new device too

            forced = in_parallel(PARALLEL, lambda: bot.request(
                "POST", "/api/save-session?force=true", headers=AUTH, timeout=60))
            patches = len(heroku.requests_with("PATCH"))

            heroku.hang_next(count=1000, seconds=hang)
            health: list[float] = []
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    started = time.monotonic()
                    try:
                        bot.request("GET", "/api/health", timeout=35)
                    except OSError:
                        pass
                    health.append(time.monotonic() - started)
                    done.wait(0.2)

            sampler = threading.Thread(target=sample)
            sampler.start()
            hanging = in_parallel(PARALLEL, lambda: bot.request("POST", "/api/save-session", headers=AUTH,
                                                                 timeout=35))
            done.set()
            sampler.join()
            return {
                "PATCHes for 10 parallel forced saves": patches,
                "forced save answers (status codes)": sorted({str(o[0]) for _, o in forced}),
                "first save answer, API hanging (s)": round(min(t for t, _ in hanging), 1),
                "last save answer, API hanging (s)": round(max(t for t, _ in hanging), 1),
                "answers after 30 s (cut by Heroku's router)": sum(t >= 30 for t, _ in hanging),
                "slowest /api/health while saves hang (s)": round(max(health), 2),
                "health answers over 1 s": sum(h > 1 for h in health),
            }
        finally:
            bot.stop()
            heroku.stop()


QUICK_DEADLINE = 4.0


README = {  # what README.md says of each figure (tests/test_bench.py checks the numbers are there)
    "patches": "one Platform API write for 10 parallel forced saves",
    "hanging": "within SAVE_DEADLINE + 2 s; last of 10 at 20.0 s (SAVE_DEADLINE 20)",
    "health": "/api/health answers at once",
}


def figures(quick: bool = False, baseline: Path | None = None) -> list[Figure]:
    """This checkout and, with `baseline`, another one measured the same way. Quick: SAVE_DEADLINE=4, so
    the hanging phase takes seconds, not the default 20 s plus 2."""
    deadline = QUICK_DEADLINE if quick else None
    ours = measure(ROOT, deadline)
    base = measure(baseline.resolve(), deadline) if baseline else None
    label = f"--baseline {baseline}" if baseline else "--baseline DIR not given"
    limit = f"SAVE_DEADLINE={deadline:g}" if quick else "SAVE_DEADLINE=20"

    def pick(name: str) -> float | None:
        return base[name] if base else None

    patches, last, health = ("PATCHes for 10 parallel forced saves", "last save answer, API hanging (s)",
                             "slowest /api/health while saves hang (s)")
    return [
        Figure("PATCHes for 10 parallel forced saves", ours[patches], "", label, pick(patches),
               README["patches"]),
        Figure(f"last of 10 save answers, Platform API hanging ({limit})", ours[last], "s", label, pick(last),
               README["hanging"]),
        Figure("slowest /api/health while those saves hang", ours[health], "s", label, pick(health),
               README["health"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", type=Path, help="another checkout of the bot, measured the same way")
    args = parser.parse_args()
    runs = {"this checkout": measure(ROOT)}
    if args.baseline:
        runs = {"baseline": measure(args.baseline.resolve()), **runs}
    names = list(next(iter(runs.values())))
    width = max(map(len, names))
    print(f"{'':{width}}  " + "  ".join(f"{label:>16}" for label in runs))
    for name in names:
        print(f"{name:{width}}  " + "  ".join(f"{str(run[name]):>16}" for run in runs.values()))


if __name__ == "__main__":
    main()
