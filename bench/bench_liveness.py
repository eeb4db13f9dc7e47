"""How long a quietly dead connection stays "connected" (issue 13), with whatsmeow's real ping timing.

Run: .venv/bin/python bench/bench_liveness.py

A real gunicorn bot pairs with the loopback WhatsApp server (tests/wasim), which then keeps the socket
open but stops answering keep-alive pings. Printed: seconds from the last answered ping until the bot
gave up on the connection, and until it was connected again with the same device (no QR, no save).
Baseline in the same run: whatsmeow's own limit, KeepAliveMaxFailTime (3 minutes), after which it
forces a reconnect itself, and only with its auto-reconnect on.
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.figures import Figure  # noqa: E402
from qrterminal import END_MARKER  # noqa: E402
from tests.support.harness import BotProcess, base_env, wait_for  # noqa: E402
from tests.support.qrdecode import printed_qr_texts  # noqa: E402
from tests.support.simulator import running_sim, sim_overrides  # noqa: E402

API_KEY = "bench-liveness-key-2f8e4c61"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
WHATSMEOW_MAX_FAIL = 180.0


# Quick: the simulator's copy of neonize's library pings every 2-3 s with 1 s to answer (tests/wasim/patch.py),
# one tenth of whatsmeow's 20-30 s and 10 s, and KEEPALIVE_GIVE_UP is scaled the same way (as in
# tests/test_liveness.py); whatsmeow's own limit is compared at the same scale.
QUICK_KEEPALIVE, QUICK_GIVE_UP, QUICK_SCALE = (2.0, 3.0, 1.0), "5.5", 0.1


def measure(keepalive: tuple[float, float, float] | None = None,
            give_up: str | None = None) -> tuple[float, float, int, float]:
    """(s until the bot gave up, s until connected again, saves seen) from the moment pings go unanswered,
    and the silence the bot logged when it gave up: seconds since whatsmeow's last answered ping
    (KeepAliveTimeout's LastSuccess, whole seconds), the time whatsmeow's own limit counts from."""
    options = {"keepalive": keepalive} if keepalive else {}
    extra = {"KEEPALIVE_GIVE_UP": give_up} if give_up else {}
    with tempfile.TemporaryDirectory() as tmp, running_sim(str(Path(tmp) / "wasim"), phone_number="14155550199",
                                                           **options) as sim:
        bot = BotProcess(base_env(**sim_overrides(sim), API_KEY=API_KEY, SESSION_DIR=str(Path(tmp) / "session"),
                                  SESSION_SAVE_DELAY="0.3", **extra)).start()
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
            silence = float(re.search(r"keep-alive failed \d+ times over (\d+)s", bot.output()).group(1))
        finally:
            bot.stop()
    return gave_up, back, saves, silence


README = {  # what README.md says of each figure (tests/test_bench.py checks the numbers are there)
    "dropped": "dropped 75 s after the last answer (whatsmeow alone: 180 s)",
    "back": "connected again at 76 s (whatsmeow alone: 180 s)",
}


def figures(quick: bool = False, baseline=None) -> list[Figure]:
    """Real whatsmeow timing (about a minute); quick: all timing at 1/10, whatsmeow's limit too. Both
    figures count from the last answered ping, as whatsmeow's limit does."""
    gave_up, back, saves, silence = measure(QUICK_KEEPALIVE, QUICK_GIVE_UP) if quick else measure()
    limit = WHATSMEOW_MAX_FAIL * (QUICK_SCALE if quick else 1)
    note = f"ping timing ×1/10, KEEPALIVE_GIVE_UP={QUICK_GIVE_UP}" if quick else ""
    return [
        Figure("last answered ping → bot drops the dead connection", silence, "s",
               "whatsmeow KeepAliveMaxFailTime", limit,
               README["dropped"], note=note),
        Figure(f"last answered ping → connected again, same device ({saves - 1} saves besides the pairing's)",
               silence + back - gave_up, "s", "whatsmeow KeepAliveMaxFailTime", limit,
               README["back"], note=note),
    ]


def main() -> None:
    gave_up, back, saves, _silence = measure()
    print("pings unanswered from t=0 (the last answer came at most one ping interval, 20-30 s, before)")
    print(f"bot gave up on the dead connection      {gave_up:6.1f} s")
    print(f"bot connected again, same device        {back:6.1f} s   (saves: {saves}, the pairing's one)")
    print(f"whatsmeow alone (KeepAliveMaxFailTime)   {WHATSMEOW_MAX_FAIL:6.1f} s after the last answer, "
          f"ratio {WHATSMEOW_MAX_FAIL / back:.1f}x")


if __name__ == "__main__":
    main()
