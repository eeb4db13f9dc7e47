"""The event vocabulary and its queue (events.py), and what a connection reports, in process.

The real webhook receiver, the real bot and the WhatsApp simulator: tests/test_sim_events.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import events
import stores
import whatsapp
from errors import failure_event
from delivery import EventQueue
from tests.support.botkit import WAIT, Bot
from tests.support.harness import wait_for
from tests.support.scripted_client import Control


class Recorder:
    """Stands in for the EventQueue where only what the connection emits matters."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def emit(self, event, data=None):
        self.events.append(events.envelope(event, data))

    def enqueue(self, payload):
        self.events.append(payload)

    def names(self) -> list[str]:
        return [e["event"] for e in self.events]

    def of(self, name: str) -> list[dict]:
        return [e["data"] for e in self.events if e["event"] == name]

    def status(self):
        return {}

    def stop(self, timeout=0):
        pass


@pytest.fixture
def recorded(tmp_path):
    bot = Bot(tmp_path)
    recorder = Recorder()
    bot.connection._webhook = recorder
    bot.session.notify = recorder.emit
    bot.start()
    yield bot, recorder
    bot.stop()


def test_the_queue_drops_the_oldest_ordinary_event_never_logged_out():
    queue = EventQueue("http://127.0.0.1:9/never", queue_size=3)  # not started: nothing drains it
    queue.emit("logged_out", {"reason": "r"})
    for n in range(4):
        queue.emit("qr", {"index": n})
    assert queue.pending() == 3 and queue.dropped == 2
    assert queue.store.names() == ["logged_out", "qr", "qr"]
    assert [json.loads(body)["data"]["index"] for _, body in list(queue.store._items)[1:]] == [2, 3]
    for _ in range(3):
        queue.emit("logged_out", {})
    assert queue.store.names().count("logged_out") == 4, "critical events are all kept"
    assert queue.status() == {"pending": 4, "delivered": 0, "dropped": 4, "failed": 0, "lastError": None,
                              "queue": "memory"}


def test_every_event_has_one_shape():
    payload = events.envelope("connected", {"jid": "1@s.whatsapp.net"})
    assert set(payload) == {"eventId", "event", "timestamp", "data"}
    assert payload["eventId"] != events.envelope("connected", {})["eventId"], "every event its own id"
    assert payload["timestamp"].endswith("Z") and payload["data"] == {"jid": "1@s.whatsapp.net"}


class _Flaky(BaseHTTPRequestHandler):
    """503 while `down` is set; records what it accepted."""

    down = threading.Event()
    accepted: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).down.is_set():
            self.send_response(503)
        else:
            type(self).accepted.append((dict(self.headers), body))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_webhook_that_is_down_for_a_while_gets_every_event_in_order_then_the_status_says_so():
    _Flaky.accepted = []
    _Flaky.down.set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    queue = EventQueue(f"http://127.0.0.1:{server.server_port}/hook", "k3y", first_retry=0.02, attempts=1000)
    queue.start()
    try:
        for n in range(20):
            queue.emit("receipt", {"id": f"M{n}", "status": "delivered"})
        wait_for(lambda: queue.last_error and queue.status()["pending"] == 20, WAIT, "failed attempts")
        assert queue.status()["lastError"] == "receipt event: HTTP 503"
        _Flaky.down.clear()
        wait_for(lambda: queue.delivered == 20, WAIT, "every event once the webhook is back")
    finally:
        queue.stop()
        server.shutdown()
        server.server_close()
    ids = [json.loads(body)["data"]["id"] for _, body in _Flaky.accepted]
    assert ids == [f"M{n}" for n in range(20)]
    for headers, body in _Flaky.accepted:
        assert headers["X-Signature-256"] == "sha256=" + hmac.new(b"k3y", body, hashlib.sha256).hexdigest()
    assert queue.status()["pending"] == 0 and queue.dropped == 0 and queue.failed == 0


def test_a_connection_reports_qr_pairing_connection_loss_and_logout(recorded):
    bot, recorder = recorded
    bot.pair(seed=31)
    qr = recorder.of("qr")[0]
    assert qr["code"] == bot.control.events("qr")[0]["code"] and qr["index"] == 1 and qr["expiresAt"]
    jid = bot.control.events("paired")[-1]["jid"]
    assert recorder.of("paired") == [{"jid": jid}]
    wait_for(lambda: recorder.of("connected"), WAIT, "the connected event")
    assert recorder.of("connected")[0]["jid"].split("@")[0].split(":")[0] == jid.split("@")[0].split(":")[0]

    bot.control.send("drop")  # whatsmeow reconnects by itself
    wait_for(lambda: len(recorder.of("connected")) == 2, WAIT, "the reconnect")
    assert recorder.of("disconnected")[0]["retryInSeconds"] is None

    bot.control.send("logout")
    bot.wait_state("waiting_for_qr")
    assert recorder.of("logged_out") and "logged out by WhatsApp" in recorder.of("logged_out")[0]["reason"]
    assert recorder.names().index("logged_out") > recorder.names().index("connected")
    assert len(recorder.of("disconnected")) == 1, "a logout is its own event"


def test_stream_replaced_is_one_disconnected_event_with_the_wait(recorded):
    bot, recorder = recorded
    bot.pair(seed=32)
    bot.control.send("replace")
    wait_for(lambda: recorder.of("disconnected"), WAIT, "the disconnected event")
    assert recorder.of("disconnected")[0]["retryInSeconds"] == 60.0
    assert "stream replaced" in recorder.of("disconnected")[0]["reason"]


class BrokenStore:
    """A local store whose writes fail the way a full disk does."""

    def __init__(self, store) -> None:
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def save(self, text, **kwargs):
        raise stores.LocalStoreError("could not write /secret/path/session.snapshot: disk full")

    def clear(self, **kwargs):
        raise stores.LocalStoreError("could not remove /secret/path/session.snapshot")


def test_a_failed_save_and_a_failed_wipe_are_save_failed_events_with_the_hint(tmp_path):
    bot = Bot(tmp_path, store=BrokenStore(stores.LocalFileStore(tmp_path / "session.snapshot")))
    recorder = Recorder()
    bot.connection._webhook = recorder
    bot.session.notify = recorder.emit
    bot.start()
    try:
        bot.pair(seed=33)
        wait_for(lambda: recorder.of("save_failed"), WAIT, "the save_failed event")
        failed = recorder.of("save_failed")[0]
        assert failed == {"during": "save (new pairing)", "error": "LocalStoreError", "status": None,
                          "message": stores.LocalStoreError.summary, "hint": stores.LocalStoreError.hint}
        bot.control.send("logout")
        wait_for(lambda: len(recorder.of("save_failed")) == 2, WAIT, "the failed wipe")
        assert recorder.of("save_failed")[1]["during"].startswith("wipe (")
        assert "/secret/path" not in json.dumps(recorder.events), "our words, not the error's text"
    finally:
        bot.stop()


def test_failure_event_never_carries_the_upstream_text():
    from heroku_api import AuthenticationFailed

    data = failure_event(AuthenticationFailed("HTTP 401: token HRKU-abc is invalid", status=401), "save (x)")
    assert "HRKU" not in json.dumps(data) and data["status"] == 401 and data["hint"]


def test_receipts_of_sent_messages_are_keyed_by_the_id_the_send_returned(recorded):
    from neonize.proto.Neonize_pb2 import Receipt

    bot, recorder = recorded
    bot.pair(seed=34)
    sent = bot.connection.send_text("4915112345678", "hello")
    assert recorder.of("receipt")[0] == {"id": sent["id"], "status": "sent",
                                         "chat": "4915112345678@s.whatsapp.net",
                                         "at": recorder.of("receipt")[0]["at"]}
    for kind in (Receipt.DELIVERED, Receipt.READ, Receipt.PLAYED, Receipt.READ_SELF, Receipt.RETRY):
        bot.control.send("receipt", ids=[sent["id"]], type=kind, sender="4915112345678")
    bot.control.send("receipt", ids=["END"], type=Receipt.DELIVERED)
    wait_for(lambda: recorder.of("receipt")[-1]["id"] == "END", WAIT, "the receipts")
    got = recorder.of("receipt")[1:-1]
    assert [r["status"] for r in got] == ["delivered", "read", "read"]
    assert got[2]["played"] is True and all(r["id"] == sent["id"] for r in got)
    assert got[0]["chat"] == "4915112345678@s.whatsapp.net"


def test_an_outage_is_one_unreachable_event_after_the_grace_and_the_login_ends_it(tmp_path):
    """Also at the start: a bot that never connected since its boot is out of reach too."""
    bot = Bot(tmp_path)
    recorder = Recorder()
    bot.connection._webhook = recorder
    bot.connection._outage.grace = 0.5
    bot.connection._backoff = whatsapp.Backoff(first=0.05, cap=0.1)
    bot.control.update_world(fail_connects=1_000_000)
    bot.start()
    try:
        wait_for(lambda: recorder.of("unreachable"), WAIT, "the unreachable event")
        outage = bot.connection.status()["unreachable"]
        assert outage["reported"] is True
        sent = recorder.of("unreachable")[0]
        assert sent["cause"] == "connecting to WhatsApp failed" and sent["since"] == outage["since"]
        assert sent["detail"] and sent["seconds"] >= 0
        wait_for(lambda: bot.connection.connect_attempts > 10, WAIT, "more failed attempts")
        assert len(recorder.of("unreachable")) == 1, "once per outage, however many attempts"

        bot.control.update_world(fail_connects=0)  # WhatsApp is back: a QR code (no device yet)
        bot.wait_state("waiting_for_qr")
        assert bot.connection.status()["unreachable"] is None
        bot.control.send("pair", seed=33)
        bot.wait_state("connected")
        wait_for(lambda: recorder.of("connected"), WAIT, "the connected event")
        assert "outageSeconds" not in recorder.of("connected")[0], "the QR ended the outage already"

        bot.control.update_world(fail_connects=1_000_000)
        bot.control.send("connect_failure")  # the server ends the stream; reconnects then fail
        wait_for(lambda: len(recorder.of("unreachable")) == 2, WAIT, "the second outage's event")
        assert recorder.of("unreachable")[1]["cause"] == "the connection to WhatsApp was lost"
        assert bot.connection.status()["lastDisconnect"]["reason"] == recorder.of("disconnected")[0]["reason"]
        bot.control.update_world(fail_connects=0)
        wait_for(lambda: len(recorder.of("connected")) == 2, WAIT, "the login that ends it")
        assert recorder.of("connected")[1]["outageSeconds"] >= 0.5
        assert bot.connection.status()["unreachable"] is None
        names = recorder.names()
        assert names.index("unreachable") < names.index("qr")
    finally:
        bot.stop()


def test_the_scripted_clients_countdown_of_failures_never_undoes_the_tests_reset(tmp_path):
    """The test above once waited forever: a client counting down `fail_connects` read 1,000,000, the
    test wrote 0, the client wrote back 999,999. Here the client's read is held until the test has
    tried to write: the test's 0 must win."""
    control = Control(tmp_path)
    control.update_world(fail_connects=1_000_000)
    client_read, let_client_go = threading.Event(), threading.Event()
    read_world = control.world

    def world_held_for_the_client() -> dict:
        world = read_world()
        if threading.current_thread().name == "client":
            client_read.set()
            let_client_go.wait(10)
        return world

    control.world = world_held_for_the_client
    client = threading.Thread(target=control.take_connect_failure, name="client")
    client.start()
    assert client_read.wait(10)
    test_side = threading.Thread(target=control.update_world, kwargs={"fail_connects": 0})
    test_side.start()
    test_side.join(0.5)  # a write that does not wait for the client's step is done by now
    let_client_go.set()
    client.join(10)
    test_side.join(10)
    assert read_world()["fail_connects"] == 0


def test_a_short_blip_and_a_restart_are_no_outage(tmp_path):
    bot = Bot(tmp_path)
    recorder = Recorder()
    bot.connection._webhook = recorder
    bot.connection._outage.grace = 1.0
    bot.start()
    try:
        bot.pair(seed=34)
        bot.control.send("drop")  # whatsmeow reconnects at once
        wait_for(lambda: len(recorder.of("connected")) == 2, WAIT, "the reconnect")
    finally:
        bot.stop()
    time.sleep(1.2)
    assert "unreachable" not in recorder.names()


def _message_event_from_the_wire(push_name: bytes, text: bytes, user: bytes):
    """A neonize Message event as neonize builds it: parsed from the bytes the Go side marshals. Go
    does not check proto2 strings for UTF-8, so any bytes a client sent reach this parse."""
    from neonize.proto import Neonize_pb2

    event = Neonize_pb2.Message()
    event.Info.ID, event.Info.Pushname, event.Message.conversation = "3EB0BADUTF8", "PUSHNAME", "THETEXT"
    event.Info.MessageSource.Sender.User, event.Info.MessageSource.Sender.Server = "SENDER", "s.whatsapp.net"
    event.Info.MessageSource.Chat.User, event.Info.MessageSource.Chat.Server = "SENDER", "s.whatsapp.net"
    wire = event.SerializePartialToString()
    for placeholder, value in ((b"PUSHNAME", push_name), (b"THETEXT", text), (b"SENDER", user)):
        # Same-length stand-ins keep every length prefix of the message right.
        assert len(placeholder) == len(value)
        wire = wire.replace(placeholder, value)
    parsed = Neonize_pb2.Message()
    parsed.MergeFromString(wire)
    return parsed


def test_a_message_whose_push_name_and_text_are_not_utf8_is_delivered_with_replacement_characters():
    event = _message_event_from_the_wire(b"Ad\xff\xfe\xc3(\x80a", b"hi \xed\xa0\x80!", b"49151\xff")
    assert isinstance(event.Info.Pushname, bytes)  # what protobuf's upb runtime hands back
    payload = events.message_payload(event)
    body = json.loads(json.dumps(payload))  # plain JSON: the payload itself holds text only
    assert body["data"]["pushName"].startswith("Ad\ufffd") and body["pushName"] == body["data"]["pushName"]
    assert body["data"]["text"].startswith("hi \ufffd")
    assert body["data"]["from"] == "49151\ufffd@s.whatsapp.net" and "b'" not in body["data"]["chat"]


def test_an_event_that_cannot_be_encoded_is_counted_and_logged_and_the_next_one_still_goes_out(caplog):
    _Flaky.accepted = []
    _Flaky.down.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    queue = EventQueue(f"http://127.0.0.1:{server.server_port}/hook", first_retry=0.02)
    queue.start()
    try:
        queue.emit("receipt", {"id": "M1", "status": object()})  # a producer's bug: no JSON for it
        queue.emit("receipt", {"id": b"M2\xff", "status": "read"})  # stray bytes: decoded, sent
        wait_for(lambda: queue.delivered + queue.failed == 2, WAIT, "both events handled")
    finally:
        queue.stop()
        server.shutdown()
        server.server_close()
    assert queue.status()["failed"] == 1 and queue.delivered == 1
    assert queue.status()["lastError"] == "receipt event could not be encoded as JSON (TypeError)"
    [(_, body)] = _Flaky.accepted
    assert json.loads(body)["data"]["id"] == "M2\ufffd"
    lines = [r for r in caplog.records if r.name == "webhook" and "could not be encoded" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None
