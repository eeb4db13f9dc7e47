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

from tests.support import mediafiles  # noqa: E402
from tests.support.harness import BotProcess, base_env  # noqa: E402
from tests.support.slowclients import Dripper, peak_rss_mb, worker_pid  # noqa: E402

API_KEY = "bench-requests-key-5d1c7e20"
DRIP_SECONDS = 14


def image_bombs(bot: BotProcess) -> None:
    for name, data in (("34-byte WebP", mediafiles.WEBP_BOMB), ("657 KB PNG", mediafiles.png_of_zeros(13000, 13000))):
        worker = worker_pid(bot)
        before = peak_rss_mb(worker)
        started = time.monotonic()
        response = requests.post(bot.url + "/api/send-image", headers={"X-Api-Key": API_KEY}, timeout=300,
                                 data={"to": "+14155552671"}, files={"file": ("image", data)})
        print(f"{name} ({len(data)} bytes): HTTP {response.status_code} {response.json().get('error')} "
              f"in {time.monotonic() - started:.1f}s; worker peak RSS {before:.0f} -> {peak_rss_mb(worker):.0f} MB")


def slow_clients(bot: BotProcess) -> None:
    drippers = [Dripper(bot.port) for _ in range(20)]
    slowest, failures, asked = 0.0, 0, 0
    try:
        until = time.monotonic() + DRIP_SECONDS
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
    print(f"20 drippers for {DRIP_SECONDS}s: {asked} health checks, {failures} timed out (5 s), slowest "
          f"{slowest:.2f}s; drippers cut: {len(cut)}/20" + (f" after {cut[0]:.1f}-{cut[-1]:.1f}s" if cut else ""))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bot = BotProcess(base_env(API_KEY=API_KEY, SESSION_DIR=str(Path(tmp) / "session"))).start()
        try:
            bot.wait_healthy()
            bot.wait_for_line("WhatsApp unreachable")  # settled: the connection is trying (no WhatsApp)
            image_bombs(bot)
            slow_clients(bot)
        finally:
            bot.stop()


if __name__ == "__main__":
    main()
