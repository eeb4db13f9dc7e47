"""The real neonize client, offline: a restored session survives failed connects (issue 6).

WhatsApp is unreachable here (the harness points HTTPS_PROXY at a dead port), which is what a
dyno sees during a WhatsApp or network outage: `connect()` raises at once, again and again.
"""

import sqlite3

import snapshot
import stores
from tests.support import wadb
from tests.support.harness import wait_for


def test_restored_session_is_kept_while_connects_fail_and_back_off(start_bot, tmp_path):
    made = wadb.make_session(str(tmp_path / "laptop"), "50", seed=61)
    text = snapshot.pack(made.session_dir, 16384)
    session_dir = tmp_path / "session"
    stores.LocalFileStore(tmp_path / "session.snapshot").save(text)

    bot = start_bot(SESSION_DIR=str(session_dir))
    bot.wait_healthy()
    bot.wait_for_line("restored session for " + made.jid)
    # Three failed dials, each followed by a backoff wait: the loop retries and never crashes.
    bot.wait_for_line("retrying in", occurrences=3, timeout=30)
    # The probe found the proxy dead: neonize was never asked to connect (issue 17).
    assert "WhatsApp unreachable (cannot reach proxy 127.0.0.1:9" in bot.output()
    status = bot.request("GET", "/api/session-status")[1]
    assert status["hasLocalSession"] is True and status["lastError"].startswith("WhatsApp unreachable")
    assert status["connectAttempts"] >= 3 and status["clientConnects"] == 0
    assert status["state"] in ("reconnecting", "connecting")

    code = bot.stop()
    assert code == 0
    # Nothing wiped: neonize opened the restored database and left the device in it.
    with sqlite3.connect(session_dir / snapshot.DB_NAME) as db:
        assert db.execute("SELECT jid FROM whatsmeow_device").fetchall() == [(made.jid,)]
    assert (tmp_path / "session.snapshot").read_text() == text
    assert "wiping" not in bot.output() and "WHATSAPP QR" not in bot.output()


def test_backoff_delays_grow_between_failed_dials(start_bot, tmp_path):
    bot = start_bot()
    bot.wait_for_line("retrying in", occurrences=4, timeout=40)
    delays = [float(line.rsplit("retrying in ", 1)[1].rstrip("s")) for line in bot.output().splitlines()
              if "retrying in" in line][:4]
    assert delays[3] > delays[0], delays
    wait_for(lambda: bot.request("GET", "/api/health")[0] == 200, 5, "health during backoff")


def test_failed_neonize_connects_without_the_probe(start_bot):
    # RECONNECT_PROBE=0: every attempt goes to neonize, which fails to dial the dead proxy.
    bot = start_bot(RECONNECT_PROBE="0", RECONNECT_DELAY_MIN="0.05", RECONNECT_DELAY_MAX="0.1")
    bot.wait_for_line("retrying in", occurrences=3, timeout=30)
    assert "failed to dial" in bot.output() or "connection failed" in bot.output()
    status = bot.request("GET", "/api/session-status")[1]
    assert status["clientConnects"] >= 3 and status["connectAttempts"] - status["clientConnects"] in (0, 1)


def test_the_worker_is_replaced_after_too_many_connects(start_bot):
    # neonize leaks one database handle per connect(); the worker hands over before that hurts.
    # Without the probe, so that the failed attempts reach neonize.
    bot = start_bot(MAX_CONNECTS_PER_WORKER="2", RECONNECT_PROBE="0")
    bot.wait_for_line("handing over to a fresh worker", timeout=30)
    bot.wait_for_line("Booting worker with pid", occurrences=2, timeout=30)
    bot.wait_for_line("WhatsApp connection starting in worker pid", occurrences=2, timeout=30)
    bot.wait_healthy()
    assert bot.proc.poll() is None, "the master keeps running"
    wait_for(lambda: len(bot.process_tree()) == 2, 10, "master + one new worker")
