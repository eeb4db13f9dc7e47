"""A connection whose socket died quietly is dropped and reconnected (issue 13).

The loopback WhatsApp server keeps the socket open but stops answering whatsmeow's keep-alive pings.
whatsmeow only reports KeepAliveTimeout; the bot gives up after KEEPALIVE_GIVE_UP seconds of silence
and reconnects with its session: connected again, same device, nothing saved, no QR.

whatsmeow's ping timing is compiled into neonize's library (20-30 s apart, 10 s to answer): the
simulator's copy of the library is patched to 2-3 s and 1 s (tests/wasim/patch.py), and
KEEPALIVE_GIVE_UP scaled the same way (between one and two failed pings), so the test takes seconds.
"""

from __future__ import annotations

from pathlib import Path


import snapshot
from qrterminal import END_MARKER
from tests.support.harness import wait_for
from tests.support.qrdecode import printed_qr_texts
from tests.support.simulator import sim_overrides

API_KEY = "liveness-api-key-5b1c9e27d4"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
WAIT = 30.0
# Pings every 2-3 s, 1 s to answer: the first failed ping shows at most 4 s after the last answer
# (plus up to 1 s: LastSuccess comes in whole seconds), the second at least 6 s after it.
KEEPALIVE = (2.0, 3.0, 1.0)
GIVE_UP = "5.5"


SIM_OPTIONS = {"phone_number": "14155550188", "keepalive": KEEPALIVE}  # for conftest's `sim`


def status(bot) -> dict:
    code, body = bot.request("GET", "/api/session-status", headers=AUTH)
    assert code == 200, body
    return body


def test_a_connection_that_stops_answering_pings_is_dropped_and_reconnected(sim, start_bot, tmp_path):
    session_dir = tmp_path / "session"
    stored = Path(f"{session_dir}.snapshot")
    bot = start_bot(**sim_overrides(sim), SESSION_SAVE_DELAY="0.3", API_KEY=API_KEY,
                    SESSION_DIR=str(session_dir), KEEPALIVE_GIVE_UP=GIVE_UP)
    sim.wait_for_qr(timeout=WAIT)
    bot.wait_for_line(END_MARKER, timeout=WAIT)
    jid = sim.scan_qr(printed_qr_texts(bot.output())[0])
    bot.wait_for_line("session saved (", timeout=WAIT)
    bot.wait_state("connected", timeout=WAIT)
    saved = stored.read_text()
    logins = sim.login_count(jid)
    assert status(bot)["keepaliveReconnects"] == 0

    sim.stop_answering_pings(jid)  # the socket stays open; nothing comes back any more

    wait_for(lambda: status(bot)["keepaliveReconnects"] >= 1, WAIT, "the bot to give up on the dead connection")
    wait_for(lambda: sim.login_count(jid) > logins, WAIT, "a new login with the same device")
    bot.wait_state("connected", timeout=WAIT)
    after = status(bot)
    assert "keep-alive failed" in after["lastError"]
    assert after["deviceJid"] == jid and after["hasLocalSession"] is True
    assert sim.unanswered_pings >= 2  # one lost ping alone did not drop it
    # The session was kept and nothing was saved or shown again.
    assert stored.read_text() == saved and snapshot.device_jid(session_dir) == jid
    assert bot.output().count("session saved (") == 1
    assert len(printed_qr_texts(bot.output())) == 1
