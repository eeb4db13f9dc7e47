"""Process start → first `/api/health` 200, and the idle worker's memory, against a bare gunicorn.

Run: .venv/bin/python bench/bench_boot.py [--runs 5]

Both are started the same way (gunicorn, one gthread worker, on loopback); the baseline serves a
one-line WSGI app (bench/baseline_app.py), the bot is started with the Procfile's command and the real
neonize client, WhatsApp unreachable (a dead proxy), so its connection thread is backing off: the state
an owner's bot is in before it has connected. Goals (issue 6): under 2 s to health, under 150 MB RSS.
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

from bench.figures import Figure  # noqa: E402
from tests.support.harness import BotProcess, base_env, wait_for  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(command: list[str] | None, health: str, env: dict[str, str], settle: str | None,
            cwd: Path = ROOT) -> tuple[float, float]:
    bot = BotProcess(env, command=command, cwd=cwd)
    started = time.monotonic()
    bot.start()
    try:
        def up():
            try:
                return bot.request("GET", health, timeout=1)[0] == 200
            except (OSError, ValueError):
                return False

        wait_for(up, 30, "health", interval=0.01)
        elapsed = time.monotonic() - started
        if settle:
            bot.wait_for_line(settle, timeout=30)
        workers = [pid for pid in bot.process_tree() if pid != bot.proc.pid]
        return elapsed, max(rss_mb(pid) for pid in workers)
    finally:
        bot.stop()


BASELINE = "baseline gunicorn"
BOT = "bot (Procfile, real neonize)"


README = {  # what README.md says of each figure (tests/test_bench.py checks the numbers are there)
    "start": "start to /api/health 1.4 s (bare gunicorn 0.3 s)",
    "rss": "83 MB with neonize loaded (19 MB)",
}


def measure_all(runs: int) -> dict[str, list[tuple[float, float]]]:
    """(start→health s, worker RSS MB) per run, for the bare gunicorn and for the bot."""
    baseline_cmd = [sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--threads", "8",
                    "--workers", "1", "--no-control-socket", "baseline_app:app"]
    rows = {BASELINE: [], BOT: []}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(runs):
            rows[BASELINE].append(measure(baseline_cmd, "/", base_env(), None, cwd=ROOT / "bench"))
            bot_env = base_env(SESSION_DIR=f"{tmp}/session-{run}")
            # "retrying in" = the connection thread tried WhatsApp and is backing off: neonize is loaded.
            rows[BOT].append(measure(None, "/api/health", bot_env, "retrying in"))
    return rows


def figures(quick: bool = False, baseline=None) -> list[Figure]:
    """Medians over 5 runs (quick: 1) of each, the bare gunicorn started first in each run."""
    rows = measure_all(1 if quick else 5)
    t = {name: statistics.median(v for v, _ in values) * 1000 for name, values in rows.items()}
    m = {name: statistics.median(v for _, v in values) for name, values in rows.items()}
    return [
        Figure("process start → /api/health 200, WhatsApp unreachable", t[BOT], "ms", "bare gunicorn", t[BASELINE],
               README["start"]),
        Figure("worker RSS, neonize loaded, not connected", m[BOT], "MB", "bare gunicorn", m[BASELINE],
               README["rss"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = measure_all(args.runs)
    base_t = statistics.median(t for t, _ in rows[BASELINE])
    base_m = statistics.median(m for _, m in rows[BASELINE])
    print(f"runs: {args.runs} (median)")
    print(f"{'':32} {'start→health ms':>16} {'ratio':>6} {'worker RSS MB':>14} {'ratio':>6}")
    for name, values in rows.items():
        t = statistics.median(v for v, _ in values)
        m = statistics.median(v for _, v in values)
        print(f"{name:32} {t * 1000:16.0f} {t / base_t:6.2f} {m:14.1f} {m / base_m:6.2f}")


if __name__ == "__main__":
    main()
