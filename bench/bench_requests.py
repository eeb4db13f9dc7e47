"""Hostile requests against a real gunicorn bot (issue 21, section 4): image bombs and slow clients.

Run: .venv/bin/python bench/bench_requests.py

No WhatsApp is needed (sends end at the connection with 409 once the image was checked and its
thumbnail made). Printed:
- per image bomb (issue 21's 34-byte WebP and 657 KB PNG of zeros, 13000 x 13000 pixels each): the
  answer, and the worker's peak RSS before and after (VmHWM);
- with 20 clients dripping a request head at one byte a second (more than the 16 request threads):
  the slowest of the /api/health answers asked for meanwhile (each with a 5 s timeout), and when the
  drippers were cut off.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from bench.figures import Figure  # noqa: E402
from tests.support import mediafiles  # noqa: E402
from tests.support.harness import BotProcess, base_env  # noqa: E402
from tests.support.slowclients import Dripper, peak_rss_mb, worker_pid  # noqa: E402

API_KEY = "bench-requests-key-5d1c7e20"
DRIP_SECONDS = 14
QUICK_DRIP_SECONDS = 12  # still past the 10 s arrival deadline, so every dripper is cut


def image_bombs(bot: BotProcess, out=print) -> list[dict]:
    results = []
    for name, data in (("34-byte WebP", mediafiles.WEBP_BOMB), ("657 KB PNG", mediafiles.png_of_zeros(13000, 13000))):
        worker = worker_pid(bot)
        before = peak_rss_mb(worker)
        started = time.monotonic()
        response = requests.post(bot.url + "/api/send-image", headers={"X-Api-Key": API_KEY}, timeout=300,
                                 data={"to": "+14155552671"}, files={"file": ("image", data)})
        result = {"name": name, "size": len(data), "status": response.status_code,
                  "error": response.json().get("error"), "seconds": time.monotonic() - started,
                  "before": before, "after": peak_rss_mb(worker)}
        results.append(result)
        out(f"{name} ({len(data)} bytes): HTTP {result['status']} {result['error']} "
            f"in {result['seconds']:.1f}s; worker peak RSS {before:.0f} -> {result['after']:.0f} MB")
    return results


def health_seconds(bot: BotProcess) -> float:
    started = time.monotonic()
    bot.request("GET", "/api/health", timeout=5)
    return time.monotonic() - started


def slow_clients(bot: BotProcess, out=print, drip_seconds: float = DRIP_SECONDS) -> dict:
    idle = max(health_seconds(bot) for _ in range(20))  # the same question with nobody dripping
    drippers = [Dripper(bot.port) for _ in range(20)]
    slowest, failures, asked = 0.0, 0, 0
    try:
        until = time.monotonic() + drip_seconds
        while time.monotonic() < until:
            started = time.monotonic()
            asked += 1
            try:
                bot.request("GET", "/api/health", timeout=5)
            except OSError:
                failures += 1
            slowest = max(slowest, time.monotonic() - started)
        cut = sorted(d.cut_after for d in drippers if d.cut_after is not None)
    finally:
        for dripper in drippers:
            dripper.close()
    out(f"20 drippers for {drip_seconds}s: {asked} health checks, {failures} timed out (5 s), slowest "
        f"{slowest:.2f}s; drippers cut: {len(cut)}/20" + (f" after {cut[0]:.1f}-{cut[-1]:.1f}s" if cut else ""))
    return {"idle": idle, "slowest": slowest, "failures": failures, "asked": asked, "cut": cut}


def measure(out=print, drip_seconds: float = DRIP_SECONDS) -> tuple[list[dict], dict]:
    with tempfile.TemporaryDirectory() as tmp:
        bot = BotProcess(base_env(API_KEY=API_KEY, SESSION_DIR=str(Path(tmp) / "session"))).start()
        try:
            bot.wait_healthy()
            bot.wait_for_line("WhatsApp unreachable")  # settled: the connection is trying (no WhatsApp)
            return image_bombs(bot, out), slow_clients(bot, out, drip_seconds)
        finally:
            bot.stop()


README = {  # what README.md says of each figure (tests/test_bench.py checks the numbers are there)
    "bomb": "an image bomb answered 413, worker peak memory +2 MB",
    "health": "/api/health at most 52 ms with 20 drippers (14 ms with none)",
    "cut": "each cut at 10 s (else 408)",
}


def figures(quick: bool = False, baseline=None) -> list[Figure]:
    """Quick: the drippers drip 12 s instead of 14 (they must outlive the 10 s arrival deadline)."""
    bombs, slow = measure(out=lambda _line: None, drip_seconds=QUICK_DRIP_SECONDS if quick else DRIP_SECONDS)
    rows = [Figure(f"worker peak RSS after a {b['name']} bomb (HTTP {b['status']} {b['error']})", b["after"], "MB",
                   "peak before it", b["before"], README["bomb"])
            for b in bombs]
    cut = slow["cut"]
    rows.append(Figure(f"slowest /api/health, 20 clients dripping headers ({slow['failures']} timed out)",
                       slow["slowest"] * 1000, "ms", "slowest of 20 with none", slow["idle"] * 1000,
                       README["health"]))
    rows.append(Figure(f"dripping client cut after ({len(cut)}/20 cut)", cut[-1] if cut else None, "s", "", None,
                       README["cut"], note="" if cut else "none was cut"))
    return rows


def main() -> None:
    measure()


if __name__ == "__main__":
    main()
