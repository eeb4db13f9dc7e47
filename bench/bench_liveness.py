"""How long a quietly dead connection stays "connected" (issue 13), with whatsmeow's real ping timing.

Run: .venv/bin/python bench/bench_liveness.py

A real gunicorn bot pairs with the loopback WhatsApp server (tests/wasim), which then keeps the socket
open but stops answering keep-alive pings. Printed: seconds from the last answered ping until the bot
gave up on the connection, and until it was connected again with the same device (no QR, no save).
Baseline in the same run: whatsmeow's own limit, KeepAliveMaxFailTime (3 minutes), after which it
forces a reconnect itself, and only with its auto-reconnect on.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qrterminal import END_MARKER  # noqa: E402
from tests.support.harness import BotProcess, base_env, wait_for  # noqa: E402
from tests.support.qrdecode import printed_qr_texts  # noqa: E402
from tests.support.simulator import running_sim, sim_overrides  # noqa: E402

API_KEY = "bench-liveness-key-2f8e4c61"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
WHATSMEOW_MAX_FAIL = 180.0


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, running_sim(str(Path(tmp) / "wasim"),
                                                           phone_number="14155550199") as sim:
        bot = BotProcess(base_env(**sim_overrides(sim), API_KEY=API_KEY, SESSION_DIR=str(Path(tmp) / "session"),
                                  SESSION_SAVE_DELAY="0.3")).start()
        try:
            bot.wait_for_line(END_MARKER, timeout=60)
            jid = sim.scan_qr(printed_qr_texts(bot.output())[0])
            bot.wait_for_line("session saved (", timeout=60)
            logins = sim.login_count(jid)
            sim.stop_answering_pings(jid)
            stopped = time.monotonic()
            status = lambda: bot.request("GET", "/api/session-status", headers=AUTH)[1]  # noqa: E731
            wait_for(lambda: status()["keepaliveReconnects"] >= 1, 240, "the bot to give up")
            gave_up = time.monotonic() - stopped
            wait_for(lambda: sim.login_count(jid) > logins and status()["state"] == "connected", 120,
                     "connected again")
            back = time.monotonic() - stopped
            saves = bot.output().count("session saved (")
        finally:
            bot.stop()
    print("pings unanswered from t=0 (the last answer came at most one ping interval, 20-30 s, before)")
    print(f"bot gave up on the dead connection      {gave_up:6.1f} s")
    print(f"bot connected again, same device        {back:6.1f} s   (saves: {saves}, the pairing's one)")
    print(f"whatsmeow alone (KeepAliveMaxFailTime)   {WHATSMEOW_MAX_FAIL:6.1f} s after the last answer, "
          f"ratio {WHATSMEOW_MAX_FAIL / back:.1f}x")


if __name__ == "__main__":
    main()
