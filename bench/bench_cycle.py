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
from tests.support.harness import BotProcess, base_env, wait_for  # noqa: E402
from tests.support.cycle import Cycle  # noqa: E402


def timed_stop(dyno: BotProcess) -> float:
    started = time.monotonic()
    dyno.terminate()
    dyno.wait(timeout=30)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--restarts", type=int, default=10)
    args = parser.parse_args()
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
            health_times, exit_times, rss = [], [], []
            for _ in range(args.restarts):
                old = cycle.dynos.current
                rss.append(max(rss_mb(p) for p in old.process_tree() if p != old.proc.pid))
                exit_times.append(timed_stop(old))
                new = cycle.dynos.boot()
                new.wait_healthy()
                health_times.append(time.monotonic() - new.started_at)
                new.wait_for_line("nothing to save", timeout=30)
            restarts_releases = cycle.heroku.release_count - releases_before
            restarts_saves = len(cycle.heroku.requests_with("PATCH")) - patches_before
        finally:
            cycle.close()

        baseline_exit = []
        for _ in range(3):
            bare = BotProcess(base_env(), cwd=ROOT / "bench", command=[
                sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1",
                "--no-control-socket", "baseline_app:app"]).start()
            bare.wait_for_line("Booting worker", timeout=20)
            baseline_exit.append(timed_stop(bare))
            bare.stop()

    exit_median = statistics.median(exit_times)
    base_exit = statistics.median(baseline_exit)
    print(f"{'figure':44} {'value':>10}")
    print(f"{'saves (PATCH) per pairing':44} {saves_after_pairing:>10}")
    print(f"{'Platform API calls for that save (GET+PATCH)':44} {calls_for_save:>10}")
    print(f"{f'saves per {args.restarts} restarts':44} {restarts_saves:>10}")
    print(f"{f'releases per {args.restarts} restarts':44} {restarts_releases:>10}")
    print(f"{'SIGTERM→exit, bot (median, s)':44} {exit_median:>10.2f}")
    print(f"{'SIGTERM→exit, bare gunicorn (median, s)':44} {base_exit:>10.2f}")
    print(f"{'  ratio':44} {exit_median / base_exit:>10.2f}")
    print(f"{'process start→/api/health 200 (median, s)':44} {statistics.median(health_times):>10.2f}")
    print(f"{'idle worker RSS, connected (median, MB)':44} {statistics.median(rss):>10.1f}")


if __name__ == "__main__":
    main()
