"""The webhook outbox: events waiting for WEBHOOK_URL as rows of a table in the session's PostgreSQL
database (DATABASE_URL), so a crash, a `kill -9`, a dyno restart or a dead receiver loses none of them.

An event is written here when it happens and deleted only after the receiver answered 2xx
(delivery.EventQueue drives it); the next worker picks up whatever the previous one left. Rows are
delivered in the order they were written (`seq`). An event the receiver refused (a 4xx other than 429)
is not repeated and not deleted either: it keeps its row with `refused_at` set, for the owner to look at.

Only one process delivers at a time: a session-level advisory lock held on the sender's connection. During
a restart the old worker drains while the new one waits, so events never go out of order or twice at
once; the lock goes with the connection when a process dies, even by SIGKILL.

Writing happens on the producer's thread (neonize's, usually), as whatsmeow's own writes to this same
database do. When the database does not answer, the event is kept in memory (bounded like the memory
queue, counted in `pending`) and written by the sender as soon as the database is back.

Nothing here logs the URL: errors are named by their class (the password never reaches a line).
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time

from events import CRITICAL

log = logging.getLogger("webhook")

TABLE = "webhook_outbox"
#: pg_advisory_lock key of the sender (any fixed 64-bit number; "whatsapp webhook outbox" in spirit).
LOCK_KEY = 0x7768_6f75_7462_6f78
CONNECT_TIMEOUT = 5  # seconds; a producer waits at most this long before keeping the event in memory
#: After a failed write, producers keep events in memory this long without trying the database: with
#: the database away every event would otherwise hold neonize's thread for CONNECT_TIMEOUT.
RETRY_WRITES_AFTER = 10.0
#: How old the count of undelivered rows may be (the status and the sender's loop ask for it often).
COUNT_TTL = 0.5
STATEMENT_TIMEOUT_MS = 5000

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    seq        bigserial PRIMARY KEY,
    event_id   text NOT NULL UNIQUE,
    event      text NOT NULL,
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    refused_at timestamptz
)"""


class PostgresOutbox:
    """The store delivery.EventQueue uses with DATABASE_URL (see MemoryQueue for the same interface)."""

    durable = True

    def __init__(self, url: str, *, spill_size: int = 1000) -> None:
        self._url = url  # pgsession.neonize_database_url(): sslmode stated
        self._producer = None  # connection for add(), guarded by _producer_lock
        self._producer_lock = threading.Lock()
        self._write_again_at = 0.0  # time.monotonic(); before it, add() keeps events in memory
        self._sender = None  # connection of the sender thread; holds the advisory lock
        self._locked = False
        self._waiting_logged = False
        self._spill: collections.deque[tuple[str, str, str]] = collections.deque()  # (event_id, name, body)
        self._spill_size = spill_size
        self._rows = 0  # undelivered rows, as last counted (give or take what happened since)
        self._counted_at = float("-inf")  # time.monotonic() of that count
        self.dropped = 0
        self._schema_lock = threading.Lock()
        self._schema_ready = False

    # -- connections --------------------------------------------------------------------------------
    def _connect(self):
        import psycopg  # only a Postgres deployment needs the driver

        conn = psycopg.connect(self._url, connect_timeout=CONNECT_TIMEOUT, autocommit=True,
                               options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}")
        with self._schema_lock:  # the producer and the sender connect at once at start: one CREATE
            if not self._schema_ready:
                try:
                    conn.execute(SCHEMA)
                except Exception:
                    self._close_quietly(conn)
                    raise
                self._schema_ready = True
        return conn

    @staticmethod
    def _close_quietly(conn) -> None:
        try:
            conn.close()
        except Exception:
            pass

    # -- producers --------------------------------------------------------------------------------
    def add(self, name: str, body: str) -> None:
        event_id = json.loads(body).get("eventId")
        with self._producer_lock:
            if time.monotonic() < self._write_again_at:
                self._keep(event_id, name, body)  # the sender writes it once the database answers
                return
            try:
                if self._producer is None or self._producer.closed:
                    self._producer = self._connect()
                self._flush_spill(self._producer)  # what waited in memory goes first: the order holds
                self._insert(self._producer, event_id, name, body)
                return
            except Exception as exc:
                if self._producer is not None:
                    self._close_quietly(self._producer)
                    self._producer = None
                self._write_again_at = time.monotonic() + RETRY_WRITES_AFTER
                log.warning("could not write the %s event to the webhook outbox (%s): kept in memory until "
                            "the database answers", name, type(exc).__name__)
            self._keep(event_id, name, body)

    def _insert(self, conn, event_id: str, name: str, body: str) -> None:
        # ON CONFLICT: a spilled event written twice (the first write's answer was lost) is one row.
        conn.execute(f"INSERT INTO {TABLE} (event_id, event, body) VALUES (%s, %s, %s) "
                     "ON CONFLICT (event_id) DO NOTHING", (event_id, name, body))
        self._rows += 1

    def _keep(self, event_id: str, name: str, body: str) -> None:
        if len(self._spill) >= self._spill_size:
            for index, item in enumerate(self._spill):
                if item[1] not in CRITICAL:
                    del self._spill[index]
                    self.dropped += 1
                    log.warning("webhook outbox unreachable and %d events in memory: dropped the oldest %s "
                                "event", self._spill_size, item[1])
                    break
        self._spill.append((event_id, name, body))

    # -- the sender thread ------------------------------------------------------------------------------
    def _sender_conn(self):
        if self._sender is None or self._sender.closed:
            self._locked = False
            self._sender = self._connect()
        if not self._locked:
            self._locked = self._sender.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]
            if not self._locked:
                if not self._waiting_logged:
                    log.info("another process is delivering the webhook outbox (the previous worker, "
                             "draining); waiting for it")
                    self._waiting_logged = True
                return None
            self._waiting_logged = False
        return self._sender

    def _flush_spill(self, conn) -> None:
        while self._spill:
            event_id, name, body = self._spill[0]
            self._insert(conn, event_id, name, body)
            self._spill.popleft()

    def head(self):
        """(seq, name, body) of the oldest undelivered event, or None (also while another process
        holds the sender's lock). Raises when the database does not answer."""
        try:
            conn = self._sender_conn()
            if conn is None:
                return None
            with self._producer_lock:
                self._flush_spill(conn)
                self._write_again_at = 0.0  # the database answers: producers write again
            row = conn.execute(f"SELECT seq, event, body FROM {TABLE} WHERE refused_at IS NULL "
                               "ORDER BY seq LIMIT 1").fetchone()
        except Exception:
            self._drop_sender()
            raise
        return None if row is None else (row[0], row[1], row[2])

    def remove(self, seq: int) -> None:
        self._finish(f"DELETE FROM {TABLE} WHERE seq = %s", seq)

    def set_aside(self, seq: int) -> None:
        self._finish(f"UPDATE {TABLE} SET refused_at = now() WHERE seq = %s", seq)

    def _finish(self, statement: str, seq: int) -> None:
        try:
            conn = self._sender_conn()
            if conn is None:
                raise RuntimeError("lost the outbox's delivery lock")
            conn.execute(statement, (seq,))
        except Exception:
            # The row stays: the event goes out again (same eventId) once the database answers.
            self._drop_sender()
            raise
        self._rows = max(0, self._rows - 1)

    def _drop_sender(self) -> None:
        if self._sender is not None:
            self._close_quietly(self._sender)
        self._sender, self._locked = None, False

    def count(self) -> int:
        """Undelivered events: rows (counted at most COUNT_TTL ago; other processes may add rows too)
        plus what waits in memory for the database."""
        now = time.monotonic()
        if now - self._counted_at > COUNT_TTL and now >= self._write_again_at:
            with self._producer_lock:
                try:
                    if self._producer is None or self._producer.closed:
                        self._producer = self._connect()
                    self._rows = self._producer.execute(
                        f"SELECT count(*) FROM {TABLE} WHERE refused_at IS NULL").fetchone()[0]
                    self._counted_at = now
                except Exception:
                    if self._producer is not None:
                        self._close_quietly(self._producer)
                        self._producer = None
                    self._write_again_at = now + RETRY_WRITES_AFTER  # the last count stands meanwhile
        return self._rows + len(self._spill)

    def close(self) -> tuple[int, int]:
        """(kept, lost): rows left for the next start, and events only in memory the database did not take."""
        kept = self._rows
        with self._producer_lock:
            try:
                if self._producer is None or self._producer.closed:
                    self._producer = self._connect()
                self._flush_spill(self._producer)
                kept = self._producer.execute(
                    f"SELECT count(*) FROM {TABLE} WHERE refused_at IS NULL").fetchone()[0]
            except Exception as exc:
                log.warning("could not write the last events to the webhook outbox (%s)", type(exc).__name__)
            lost = len(self._spill)
            for conn in (self._producer, self._sender):
                if conn is not None:
                    self._close_quietly(conn)  # also releases the advisory lock for the next worker
            self._producer = self._sender = None
            self._locked = False
        return kept, lost
