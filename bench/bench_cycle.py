"""The Heroku cycle on real processes, counted: what a pairing and ten daily restarts cost.

Run: .venv/bin/python bench/bench_cycle.py [--restarts 10]

Real gunicorn bots (Procfile command) under the fake dyno manager and fake Platform API of the tests,
with the scripted WhatsApp client: first deploy → QR → pairing → save → release → restart, then N plain
restarts. Counts are exact; times are medians over the restarts. The SIGTERM→exit baseline is a bare
gunicorn serving a one-line app, stopped the same way in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_boot import rss_mb  # noqa: E402
from bench.figures import Figure  # noqa: E402
from tests.support.harness import BotProcess, base_env, wait_for  # noqa: E402
from tests.support.cycle import Cycle  # noqa: E402


def timed_stop(dyno: BotProcess) -> float:
    started = time.monotonic()
    dyno.terminate()
    dyno.wait(timeout=30)
    return time.monotonic() - started


BARE_COMMAND = [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1",
                "--no-control-socket", "baseline_app:app"]


def bare_gunicorn(runs: int) -> dict[str, list[float]]:
    """The baseline, started and stopped as a dyno is: start→first 200, worker RSS, SIGTERM→exit."""
    out = {"health": [], "rss": [], "exit": []}
    for _ in range(runs):
        bare = BotProcess(base_env(), cwd=ROOT / "bench", command=BARE_COMMAND).start()
        try:
            bare.wait_for_line("Booting worker", timeout=20)
            wait_for(lambda: _answers(bare), 20, "bare gunicorn's first answer", interval=0.01)
            out["health"].append(time.monotonic() - bare.started_at)
            out["rss"].append(max(rss_mb(p) for p in bare.process_tree() if p != bare.proc.pid))
            out["exit"].append(timed_stop(bare))
        finally:
            bare.stop()
    return out


def _answers(process: BotProcess) -> bool:
    try:
        return process.request("GET", "/", timeout=1)[0] == 200
    except (OSError, ValueError):
        return False


def measure(restarts: int, baseline_runs: int = 3) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cycle = Cycle(Path(tmp))
        try:
            first = cycle.dynos.boot()
            first.wait_for_line("WHATSAPP QR")
            cycle.control.send("pair", seed=99)
            wait_for(lambda: cycle.heroku.release_count == 1, 30, "the save's release")
            calls_for_save = len(cycle.heroku.requests)
            saves_after_pairing = len(cycle.heroku.requests_with("PATCH"))
            restored = wait_for(lambda: len(cycle.dynos.dynos) == 2 and cycle.dynos.current, 60, "restart")
            restored.wait_for_line("nothing to save", timeout=30)
            releases_before = cycle.heroku.release_count
            patches_before = len(cycle.heroku.requests_with("PATCH"))
            health_times, connected_times, exit_times, rss = [], [], [], []
            for _ in range(restarts):
                old = cycle.dynos.current
                rss.append(max(rss_mb(p) for p in old.process_tree() if p != old.proc.pid))
                exit_times.append(timed_stop(old))
                new = cycle.dynos.boot()
                new.wait_healthy()
                health_times.append(time.monotonic() - new.started_at)
                new.wait_state("connected", timeout=30)
                connected_times.append(time.monotonic() - new.started_at)
                new.wait_for_line("nothing to save", timeout=30)
            restarts_releases = cycle.heroku.release_count - releases_before
            restarts_saves = len(cycle.heroku.requests_with("PATCH")) - patches_before
        finally:
            cycle.close()
    return {"saves_after_pairing": saves_after_pairing, "calls_for_save": calls_for_save,
            "restarts_saves": restarts_saves, "restarts_releases": restarts_releases,
            "exit": exit_times, "health": health_times, "connected": connected_times, "rss": rss,
            "bare": bare_gunicorn(baseline_runs)}


README = {  # what README.md says of each figure (tests/test_bench.py checks the numbers are there)
    "pairing": "saves once after you pair",
    "restarts": "never on a normal reboot",
    "health": "start to /api/health 1.4 s (bare gunicorn 0.3 s)",
    "connected": "to connected with a restored session 2.0 s",
    "rss": "84 MB connected (19 MB)",
    "exit": "SIGTERM to exit 0.6 s (0.3 s)",
}


def figures(quick: bool = False, baseline=None) -> list[Figure]:
    """A pairing, then 10 restarts (quick: 1), medians; the bare gunicorn 3 times (quick: 1)."""
    restarts = 1 if quick else 10
    r = measure(restarts, 1 if quick else 3)
    med, bare = statistics.median, {k: statistics.median(v) * (1 if k == "rss" else 1000)
                                    for k, v in r["bare"].items()}
    return [
        Figure("saves (PATCH) per pairing", r["saves_after_pairing"], "", "a count", None,
               README["pairing"]),
        Figure(f"saves (PATCH) over {restarts} restart{'s' if restarts > 1 else ''}", r["restarts_saves"], "",
               "a count", None, README["restarts"]),
        Figure("dyno start → /api/health 200, restored session", med(r["health"]) * 1000, "ms", "bare gunicorn",
               bare["health"], README["health"]),
        Figure("dyno start → connected, restored session (scripted client)", med(r["connected"]) * 1000, "ms",
               "bare gunicorn → 200", bare["health"], README["connected"]),
        Figure("idle worker RSS, connected (scripted client)", med(r["rss"]), "MB", "bare gunicorn", bare["rss"],
               README["rss"]),
        Figure("SIGTERM → exit", med(r["exit"]) * 1000, "ms", "bare gunicorn", bare["exit"],
               README["exit"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--restarts", type=int, default=10)
    args = parser.parse_args()
    r = measure(args.restarts)
    exit_median = statistics.median(r["exit"])
    base_exit = statistics.median(r["bare"]["exit"])
    print(f"{'figure':44} {'value':>10}")
    print(f"{'saves (PATCH) per pairing':44} {r['saves_after_pairing']:>10}")
    print(f"{'Platform API calls for that save (GET+PATCH)':44} {r['calls_for_save']:>10}")
    print(f"{f'saves per {args.restarts} restarts':44} {r['restarts_saves']:>10}")
    print(f"{f'releases per {args.restarts} restarts':44} {r['restarts_releases']:>10}")
    print(f"{'SIGTERM→exit, bot (median, s)':44} {exit_median:>10.2f}")
    print(f"{'SIGTERM→exit, bare gunicorn (median, s)':44} {base_exit:>10.2f}")
    print(f"{'  ratio':44} {exit_median / base_exit:>10.2f}")
    print(f"{'process start→/api/health 200 (median, s)':44} {statistics.median(r['health']):>10.2f}")
    print(f"{'idle worker RSS, connected (median, MB)':44} {statistics.median(r['rss']):>10.1f}")


if __name__ == "__main__":
    main()
