"""The connection and the session policy, played through the scripted client (issue 6)."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import snapshot
import stores
import whatsapp
import whatsapp.connectionevents
import whatsapp.pair
from delivery import EventQueue as WebhookSender
from tests.support.botkit import WAIT, Bot, stored_snapshot_for
from tests.support.harness import wait_for


@pytest.fixture
def make_bot(tmp_path):
    bots = []

    def make(**kwargs) -> Bot:
        bot = Bot(tmp_path, **kwargs)
        bots.append(bot)
        return bot

    yield make
    for bot in bots:
        bot.stop()


def preloaded_store(tmp_path, text: str):
    store = stores.LocalFileStore(tmp_path / "session.snapshot")
    store.save(text)
    return store


def device_rows(db_path) -> int:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT count(*) FROM whatsmeow_device").fetchone()[0]


def test_first_start_shows_a_qr_and_saves_exactly_once_after_pairing(make_bot):
    bot = make_bot().start()
    bot.wait_state("waiting_for_qr")
    # The state changes a moment before the code's lines are printed (same handler, neonize's thread).
    wait_for(lambda: "WHATSAPP QR" in bot.out.getvalue(), WAIT, "the printed QR code")
    assert bot.connection.status()["qrAvailable"] is True
    jid = bot.pair(seed=3)
    bot.wait_saved()
    stored = bot.store.load()
    assert snapshot.inspect(stored).device_jid == jid
    assert bot.session.status()["lastSave"]["reason"] == "new pairing"
    # Still exactly one: the save does not trigger another.
    bot.control.send("drop")
    wait_for(lambda: len(bot.control.events("connected")) >= 2, WAIT, "the reconnect after the drop")
    assert bot.store.writes == 1 and len(bot.store.saves) == 1


def test_restored_session_reconnects_without_qr_and_saves_nothing(make_bot, tmp_path):
    text, jid = stored_snapshot_for(tmp_path)
    bot = make_bot(store=preloaded_store(tmp_path, text)).start()
    bot.wait_state("connected")
    assert bot.session.restored_from == "store"
    assert bot.control.events("connected")[-1]["jid"] == jid
    assert "WHATSAPP QR" not in bot.out.getvalue()
    # Once the save decision after Connected was taken, no timer was even armed.
    wait_for(lambda: bot.session.connect_checks == 1, WAIT, "the save decision")
    assert bot.session._save_timer is None
    assert bot.store.saves == []


def test_logout_on_connect_wipes_local_and_stored_session_then_shows_a_new_qr(make_bot, tmp_path):
    text, jid = stored_snapshot_for(tmp_path)
    bot = make_bot(store=preloaded_store(tmp_path, text))
    bot.control.revoke(jid)
    bot.start()
    bot.wait_state("waiting_for_qr")
    assert bot.store.load() is None
    assert bot.store.clears == 1
    assert not bot.session.has_local_session()
    assert bot.control.events("logged_out")[0]["on_connect"] is True


def test_logout_while_connected_wipes_and_a_new_pairing_saves_again(make_bot):
    bot = make_bot().start()
    first = bot.pair(seed=4)
    bot.wait_saved()
    bot.control.send("logout")
    bot.wait_state("waiting_for_qr")
    assert bot.store.load() is None and not bot.session.has_local_session()
    second = bot.pair(seed=5)
    assert second != first
    bot.wait_saved(2)
    assert snapshot.inspect(bot.store.load()).device_jid == second


def test_stream_replaced_is_not_a_logout(make_bot, tmp_path, monkeypatch):
    monkeypatch.setattr(whatsapp.connectionevents, "STREAM_REPLACED_DELAY", 0.2)
    text, jid = stored_snapshot_for(tmp_path)
    bot = make_bot(store=preloaded_store(tmp_path, text)).start()
    bot.wait_state("connected")
    bot.control.send("replace")
    bot.wait_state("reconnecting")
    assert "stream replaced" in bot.connection.last_error
    bot.wait_state("connected")
    assert bot.store.load() == text and bot.store.clears == 0 and bot.store.saves == []
    assert bot.session.device_jid() == jid


def test_connect_raising_backs_off_and_keeps_the_session(make_bot, tmp_path):
    text, jid = stored_snapshot_for(tmp_path)
    bot = make_bot(store=preloaded_store(tmp_path, text))
    bot.control.update_world(fail_connects=4)
    bot.start()
    bot.wait_state("connected")
    assert len(bot.control.events("connect_failed")) == 4
    assert bot.clients[0].connect_calls == 5, "one client, connect() retried"
    assert bot.session.device_jid() == jid and bot.store.clears == 0 and bot.store.saves == []
    assert bot.connection._backoff.failures == 0, "backoff resets once connected"


def test_backoff_grows_with_jitter_up_to_the_cap():
    import random

    backoff = whatsapp.Backoff(first=1, cap=60, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(10)]
    assert 0.5 <= delays[0] <= 1
    assert all(d <= 60 for d in delays) and max(delays) >= 30
    assert len(set(delays)) == len(delays), "jittered"
    backoff.reset()
    assert backoff.next_delay() <= 1


def test_temporary_ban_waits_and_keeps_the_session(make_bot, tmp_path):
    text, jid = stored_snapshot_for(tmp_path)
    bot = make_bot(store=preloaded_store(tmp_path, text))
    bot.control.update_world(ban_seconds=3600)
    bot.start()
    bot.wait_state("temporarily_banned")
    status = bot.connection.status()
    assert status["bannedUntil"] and "until" in status["lastError"]
    assert bot.session.has_local_session() and bot.store.load() == text and bot.store.clears == 0


def test_connect_failure_reasons(make_bot, tmp_path):
    text, jid = stored_snapshot_for(tmp_path)
    bot = make_bot(store=preloaded_store(tmp_path, text)).start()
    bot.wait_state("connected")
    bot.control.send("connect_failure", reason=8)  # INTERNAL_SERVER_ERROR: retry, keep
    wait_for(lambda: len(bot.control.events("connected")) >= 2, WAIT, "reconnect after a server error")
    assert bot.store.clears == 0 and bot.session.has_local_session()
    bot.control.send("connect_failure", reason=4)  # MAIN_DEVICE_GONE: a logout
    bot.wait_state("waiting_for_qr")
    assert bot.store.clears == 1 and bot.store.load() is None


def test_a_snapshot_that_cannot_be_restored_is_left_alone_until_a_new_pairing(make_bot, tmp_path):
    broken = "H4sIAAAAAAAA/this-is-not-a-snapshot"
    bot = make_bot(store=preloaded_store(tmp_path, broken)).start()
    bot.wait_state("waiting_for_qr")
    assert bot.session.restore_error
    assert bot.store.load() == broken, "a bad snapshot is never deleted on boot"
    jid = bot.pair(seed=9)
    bot.wait_saved()
    assert snapshot.inspect(bot.store.load()).device_jid == jid


def test_stop_disconnects_without_saving_or_wiping(make_bot, tmp_path):
    text, _ = stored_snapshot_for(tmp_path)
    bot = make_bot(store=preloaded_store(tmp_path, text)).start()
    bot.wait_state("connected")
    bot.connection.stop(timeout=5)
    assert bot.connection.state == "stopped"
    assert not bot.connection._thread.is_alive()
    assert bot.store.saves == [] and bot.store.clears == 0 and bot.session.has_local_session()


def test_clear_session_logs_out_wipes_and_offers_a_qr(make_bot, tmp_path):
    text, jid = stored_snapshot_for(tmp_path)
    bot = make_bot(store=preloaded_store(tmp_path, text)).start()
    bot.wait_state("connected")
    assert bot.connection.logout_and_wipe() is True
    bot.wait_state("waiting_for_qr")
    assert bot.control.events("logout")[0]["jid"] == jid
    assert bot.store.load() is None and not bot.session.has_local_session()


def test_qr_rounds_restart_when_nobody_scans(make_bot, monkeypatch):
    monkeypatch.setattr(whatsapp.pair, "QR_ROUND_TIMEOUT", 0.2)
    bot = make_bot().start()
    bot.wait_event("qr", count=3)
    assert bot.connection.qr_count >= 3


def test_sends_need_a_connection(make_bot):
    bot = make_bot().start()
    bot.wait_state("waiting_for_qr")
    with pytest.raises(whatsapp.NotConnected):
        bot.connection.send_text("15551234567", "hi")
    bot.pair()
    result = bot.connection.send_text("15551234567", "hi")
    assert result["id"]
    assert bot.control.events("sent")[0] == {**bot.control.events("sent")[0], "to": "15551234567@s.whatsapp.net",
                                               "text": "hi"}


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(200 if len(type(self).received) > 1 else 503)  # first attempt fails
        self.end_headers()

    def log_message(self, *args):
        pass


def test_incoming_messages_reach_the_webhook_signed_with_retries(tmp_path):
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sender = WebhookSender(f"http://127.0.0.1:{server.server_port}/hook", "s3cret-hmac", first_retry=0.05)
    sender.start()
    bot = Bot(tmp_path)
    bot.connection._webhook = sender

    def messages():
        return [json.loads(body) for _, body in _Receiver.received if json.loads(body)["event"] == "message"]

    try:
        bot.start()
        bot.pair()
        bot.control.send("message", text="hello bot", sender="15557654321", id="MSG1")
        wait_for(messages, WAIT, "webhook delivery of the message")
    finally:
        bot.stop()
        server.shutdown()
    names = [json.loads(body)["event"] for _, body in _Receiver.received]
    assert names[:2] == ["qr", "qr"], "the first attempt failed (503) and was retried, in order"
    assert names[2:] == ["paired", "connected", "message"]
    for headers, body in _Receiver.received:
        expected = "sha256=" + hmac.new(b"s3cret-hmac", body, hashlib.sha256).hexdigest()
        assert headers["X-Signature-256"] == expected
    payload = messages()[0]
    assert set(payload) >= {"event", "timestamp", "data"}
    for fields in (payload["data"], payload):  # the top level keeps the fields for older receivers
        assert fields["text"] == "hello bot" and fields["from"] == "15557654321@s.whatsapp.net"
        assert fields["id"] == "MSG1" and fields["type"] == "text" and fields["time"] > 1_000_000_000


def test_webhook_queue_is_bounded_and_never_blocks():
    sender = WebhookSender("http://127.0.0.1:9/never", queue_size=3)  # not started: nothing drains it
    for n in range(5):
        sender.enqueue({"id": n})
    assert sender.pending() == 3 and sender.dropped == 2


def test_a_worker_that_connected_too_often_hands_over(make_bot):
    bot = make_bot()
    bot.connection.max_connects = 3
    recycled = threading.Event()
    bot.connection.on_recycle = recycled.set
    bot.control.update_world(fail_connects=10)
    bot.start()
    wait_for(recycled.is_set, WAIT, "the hand-over")
    bot.connection._thread.join(5)
    assert not bot.connection._thread.is_alive() and bot.connection.connects == 3
    assert len(bot.control.events("connect_failed")) == 3
