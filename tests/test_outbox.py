"""The webhook outbox (outbox.py) and the one delivery loop (delivery.py), in process, against a real
PostgreSQL and a real HTTP receiver: nothing is removed before a 2xx, a new process delivers what the
last one left (in order, once each), a refused event is kept aside, only one process delivers at a time,
and a shutdown drains the queue within its deadline and counts what is left.

The same with the real bot (gunicorn, SIGTERM, SIGKILL, the WhatsApp simulator): tests/test_restart_events.py.
"""

from __future__ import annotations

import json
import logging
import time

import pytest

import events
from delivery import EVENT_ID_HEADER, EventQueue
from outbox import TABLE, PostgresOutbox
from tests.support.gate import Gate
from tests.support.harness import wait_for
from tests.support.simulator import WebhookReceiver, running_receiver


@pytest.fixture
def receiver():
    with running_receiver(secret="outbox-secret") as hook:
        yield hook
    assert not hook.bad_signatures


def rows(url: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(url) as conn:
        if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,)).fetchone()[0]:
            return []
        return conn.execute(f"SELECT event_id, event, refused_at IS NOT NULL FROM {TABLE} ORDER BY seq").fetchall()


def queue_on(url: str, receiver: WebhookReceiver, **options) -> EventQueue:
    options.setdefault("first_retry", 0.05)
    return EventQueue(receiver.url, "outbox-secret", store=PostgresOutbox(url), **options)


def test_events_stay_in_the_table_until_a_2xx_and_the_next_process_delivers_them_once_in_order(
    database_url, receiver
):
    receiver.down_with = 503
    first = queue_on(database_url, receiver, attempts=2)
    first.start()
    sent = [events.envelope("receipt", {"id": f"M{n}", "status": "sent"}) for n in range(5)]
    for payload in sent:
        first.enqueue(payload)
    wait_for(lambda: receiver.refused >= 4, 20, "attempts refused by the receiver")
    # Far past WEBHOOK_ATTEMPTS: the outbox never gives an event up, and nothing left the table.
    assert first.failed == 0 and first.status()["queue"] == "outbox"
    assert [r[0] for r in rows(database_url)] == [p["eventId"] for p in sent]
    assert first.pending() == 5

    # A crash: the process is gone without a word (its connections die with it), nothing drained.
    first._stopping = True
    for conn in (first.store._producer, first.store._sender):
        conn.pgconn.finish()  # the socket closes as at a SIGKILL; the server releases the lock
    receiver.down_with = None

    second = queue_on(database_url, receiver)
    second.start()
    try:
        wait_for(lambda: len(receiver.posts) >= 5 and not rows(database_url), 20, "the next process's delivery")
    finally:
        assert second.close(time.monotonic() + 5) == 0
    got = receiver.events()
    assert [e["eventId"] for e in got] == [p["eventId"] for p in sent], "each once, in the order they happened"
    assert [p.headers[EVENT_ID_HEADER] for p in receiver.posts] == [p["eventId"] for p in sent]
    assert got[0] == json.loads(json.dumps(sent[0])), "byte for byte what was queued"


def test_a_refused_event_is_kept_aside_and_the_next_one_goes_out(database_url, receiver):
    queue = queue_on(database_url, receiver)
    receiver.down_with = 400
    queue.start()
    try:
        queue.emit("qr", {"index": 1})
        wait_for(lambda: queue.failed == 1, 10, "the refusal")
        receiver.down_with = None
        queue.emit("qr", {"index": 2})
        wait_for(lambda: receiver.events("qr"), 10, "the next event")
        assert receiver.refused == 1, "a 4xx is not repeated"
        wait_for(lambda: queue.pending() == 0, 10, "an empty outbox")
    finally:
        queue.close(time.monotonic() + 5)
    assert [e["data"]["index"] for e in receiver.events("qr")] == [2]
    assert [(name, refused) for _, name, refused in rows(database_url)] == [("qr", True)]
    assert "HTTP 400" in queue.status()["lastError"]


def test_only_one_process_delivers_the_outbox_at_a_time(database_url, receiver, caplog):
    caplog.set_level(logging.INFO, logger="webhook")
    receiver.hang.set()  # the first process is stuck in a POST, holding the outbox
    first = queue_on(database_url, receiver)
    first.start()
    first.emit("connected", {"jid": "1@s.whatsapp.net"})
    wait_for(lambda: receiver.hanging, 10, "the first process's POST")
    second = queue_on(database_url, receiver)
    second.start()
    second.emit("receipt", {"id": "M1", "status": "sent"})
    wait_for(lambda: "another process is delivering the webhook outbox" in caplog.text, 10, "the second one waiting")
    assert receiver.hanging == 1, "the second process sends nothing meanwhile"
    receiver.hang.clear()
    # The lock holder delivers the whole table, the other process's event included, in order.
    wait_for(lambda: first.delivered == 2, 20, "both events from the first process")
    assert second.delivered == 0
    first.close(time.monotonic() + 5)  # releases the lock
    second.emit("receipt", {"id": "M2", "status": "sent"})
    try:
        wait_for(lambda: second.delivered == 1, 20, "the second process taking over")
    finally:
        second.close(time.monotonic() + 5)
    assert [e["event"] for e in receiver.events()] == ["connected", "receipt", "receipt"]


def test_close_delivers_within_the_deadline_then_counts_what_is_left(receiver, caplog):
    caplog.set_level(logging.INFO, logger="webhook")
    receiver.down_with = 503
    queue = EventQueue(receiver.url, "outbox-secret", first_retry=0.05, attempts=1000)
    queue.start()
    for n in range(3):
        queue.emit("receipt", {"id": f"M{n}", "status": "sent"})
    wait_for(lambda: receiver.refused >= 2, 10, "failed attempts")
    started = time.monotonic()
    assert queue.close(started + 1.0) == 3
    assert time.monotonic() - started < 3.5, "close keeps to its deadline"
    assert "shutting down with 3 webhook event(s) undelivered: lost" in caplog.text

    caplog.clear()
    queue = EventQueue(receiver.url, "outbox-secret", first_retry=0.05, attempts=1000)
    queue.start()
    for n in range(3):
        queue.emit("receipt", {"id": f"N{n}", "status": "sent"})
    wait_for(lambda: receiver.refused >= 4, 10, "failed attempts")
    receiver.down_with = None  # the receiver comes back during the shutdown
    assert queue.close(time.monotonic() + 10) == 0
    assert [e["data"]["id"] for e in receiver.events("receipt")] == ["N0", "N1", "N2"]
    assert "webhook queue delivered before shutdown" in caplog.text


def test_the_owner_sees_the_last_twenty_events_in_our_own_words_without_texts_or_codes():
    hub = events.Events()
    hub.emit("qr", {"code": "2@SECRETQRCODE", "expiresAt": "2026-11-25T23:20:04Z", "index": 1})
    hub.enqueue({"event": "message", "timestamp": "2026-11-25T23:21:00Z",
                 "data": {"from": "4915112345678@s.whatsapp.net", "type": "text", "text": "my pin is 4711"}})
    for n in range(25):
        hub.emit("receipt", {"id": f"M{n}", "status": "read", "chat": "1@s.whatsapp.net"})
    recent = hub.recent()
    assert len(recent) == 20 and recent[0]["summary"].startswith("message M24 read")
    hub2 = events.Events()
    hub2.emit("qr", {"code": "2@SECRETQRCODE", "expiresAt": "2026-11-25T23:20:04Z", "index": 1})
    hub2.enqueue({"event": "message", "timestamp": "2026-11-25T23:21:00Z",
                  "data": {"from": "4915112345678@s.whatsapp.net", "type": "text", "text": "my pin is 4711"}})
    shown = json.dumps(hub2.recent())
    assert "SECRETQRCODE" not in shown and "4711" not in shown
    assert "text message from 4915112345678@s.whatsapp.net" in shown
    assert hub2.status() is None and hub2.close() == 0


def test_while_the_database_is_away_events_wait_in_memory_then_go_out_in_order(pg_server, database_url, receiver):
    gate = Gate(pg_server.port)  # refuses connections until open(): the database is away
    url = database_url.replace(f":{pg_server.port}/", f":{gate.port}/")
    queue = EventQueue(receiver.url, "outbox-secret", store=PostgresOutbox(url), first_retry=0.05)
    queue.start()
    try:
        started = time.monotonic()
        for n in range(5):
            queue.emit("receipt", {"id": f"M{n}", "status": "sent"})
        assert time.monotonic() - started < 2, "a producer never waits for a database that is away"
        assert queue.pending() == 5 and not receiver.posts
        gate.open()
        wait_for(lambda: len(receiver.posts) == 5, 30, "the events once the database answers")
        queue.emit("receipt", {"id": "M5", "status": "sent"})
        wait_for(lambda: len(receiver.posts) == 6, 30, "an event written directly again")
    finally:
        queue.close(time.monotonic() + 5)
        gate.close()
    assert [e["data"]["id"] for e in receiver.events()] == [f"M{n}" for n in range(6)]
    assert rows(database_url) == []


def test_a_shutdown_with_the_receiver_down_leaves_the_events_in_the_outbox_and_says_how_many(
    database_url, receiver, caplog
):
    caplog.set_level(logging.INFO, logger="webhook")
    receiver.down_with = 503
    queue = queue_on(database_url, receiver)
    queue.start()
    for n in range(4):
        queue.emit("receipt", {"id": f"M{n}", "status": "sent"})
    wait_for(lambda: receiver.refused >= 2, 10, "refused attempts")
    started = time.monotonic()
    assert queue.close(started + 1.0) == 4
    assert time.monotonic() - started < 3.5
    assert "shutting down with 4 webhook event(s) undelivered: they stay in the outbox" in caplog.text
    assert "lost" not in caplog.text
    assert len(rows(database_url)) == 4
