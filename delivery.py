"""The one delivery loop of webhook events, whatever holds them: a bounded queue in memory
(`MemoryQueue`, here) or the outbox table next to the session in PostgreSQL (outbox.py).

One sender thread takes the oldest event, POSTs it to WEBHOOK_URL (signed, see webhook.sign) and
removes it only once the receiver answered 2xx; a failure is retried with exponential backoff
(WEBHOOK_RETRY_DELAY, doubling up to 60 s), so events arrive one by one, in order. A 4xx other than
429 is the receiver refusing this event: it is not repeated. A memory queue gives an event up after
WEBHOOK_ATTEMPTS tries (`logged_out`: never); the outbox never gives up (it has the room, and a dead
receiver must lose nothing). The event's id (`eventId`, also in the `X-Event-Id` header) lets a
receiver drop an event it already has: one sent again after a crash between its 2xx and its removal.

At shutdown `close(deadline)` keeps delivering until the queue is empty or the deadline passes, then
says how many were left: lost with a memory queue, delivered after the next start from the outbox.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time

import requests

from events import CRITICAL, encode
from webhook import SIGNATURE_HEADER, sign

log = logging.getLogger("webhook")

DEFAULT_QUEUE_SIZE = 1000
DEFAULT_ATTEMPTS = 10
DEFAULT_FIRST_RETRY = 1.0
MAX_RETRY_DELAY = 60.0
EVENT_ID_HEADER = "X-Event-Id"

# What _deliver made of one event.
DELIVERED, REFUSED, GAVE_UP, STOPPED = "delivered", "refused", "gave up", "stopped"




class MemoryQueue:
    """Events in a bounded deque: fast, and gone with the process. When full, the oldest event that
    is not critical (and not the one being delivered) is dropped, and counted."""

    durable = False

    def __init__(self, size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.size = size
        self._items: collections.deque[tuple[str, str]] = collections.deque()  # (event name, body)
        self._lock = threading.Lock()
        self._in_flight: tuple[str, str] | None = None
        self.dropped = 0

    def add(self, name: str, body: str) -> None:
        with self._lock:
            if len(self._items) >= self.size:
                self._drop_one()
            self._items.append((name, body))

    def _drop_one(self) -> None:
        for index, item in enumerate(self._items):
            if item[0] not in CRITICAL and item is not self._in_flight:
                del self._items[index]
                self.dropped += 1
                log.warning("webhook queue full (%d): dropped the oldest %s event", self.size, item[0])
                return
        # Only critical events queued: keep them all (a logout is rare; the queue grows by one).

    def head(self):
        """(key, name, body) of the oldest event, or None."""
        with self._lock:
            if not self._items:
                return None
            self._in_flight = self._items[0]
            return self._in_flight, self._in_flight[0], self._in_flight[1]

    def remove(self, key) -> None:
        with self._lock:
            self._in_flight = None
            if self._items and self._items[0] is key:
                self._items.popleft()

    set_aside = remove  # a refused event has nowhere else to go in memory

    def count(self) -> int:
        return len(self._items)

    def close(self) -> tuple[int, int]:
        """(kept, lost) of what is still queued: in memory, all of it is lost."""
        return 0, self.count()

    def names(self) -> list[str]:
        with self._lock:
            return [name for name, _ in self._items]


class EventQueue:
    """The sender: one thread delivering the store's events in order, with retries."""

    def __init__(
        self,
        url: str,
        secret: str | None = None,
        *,
        store=None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        attempts: int = DEFAULT_ATTEMPTS,
        first_retry: float = DEFAULT_FIRST_RETRY,
        timeout: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url
        self._secret = secret
        self.store = store if store is not None else MemoryQueue(queue_size)
        self._wake = threading.Condition()
        self._stopping = False
        self._busy = False  # an event is being delivered
        self._closing = False  # close() runs: a retry waiting out its backoff goes at once
        self._attempts = attempts
        self._first_retry = first_retry
        self._timeout = timeout
        self._session = session or requests.Session()
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.failed = 0  # given up after every attempt, or refused by the receiver (4xx)
        self.last_error: str | None = None

    @property
    def kind(self) -> str:
        return "outbox" if self.store.durable else "memory"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="webhook-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread:
            self._thread.join(timeout)

    def close(self, deadline: float) -> int:
        """Deliver until the queue is empty or `deadline` (time.monotonic()) passes, stop, and log what
        is left as a count; returns that count."""
        with self._wake:
            self._closing = True  # cuts a backoff wait short: the receiver may be back by now
            self._wake.notify_all()
        while (self._busy or self.pending()) and self._thread and self._thread.is_alive():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with self._wake:
                self._wake.wait(min(left, 0.5))
        self.stop(timeout=max(0.0, min(2.0, deadline - time.monotonic())))
        kept, lost = self.store.close()
        if kept:
            log.warning("shutting down with %d webhook event(s) undelivered: they stay in the outbox and go "
                        "out after the next start", kept)
        if lost:
            log.error("shutting down with %d webhook event(s) undelivered: lost (a queue in PostgreSQL, "
                      "DATABASE_URL, keeps them over a restart)", lost)
        if not kept and not lost:
            log.info("webhook queue delivered before shutdown")
        return kept + lost

    # -- producers (any thread) ------------------------------------------------------------------
    def emit(self, event: str, data: dict | None = None) -> None:
        from events import envelope

        self.enqueue(envelope(event, data))

    def enqueue(self, payload: dict) -> None:
        """Hand a ready payload to the store; never waits for the webhook. Encoded here, once: the
        outbox keeps the exact body, so a resend is byte-identical (same signature, same eventId)."""
        name = payload.get("event") or "message"
        try:
            body = encode(payload)
        except (TypeError, ValueError) as exc:
            # A producer put something in the event that JSON cannot carry: counted and said, never
            # dropped in silence (nor queued: the same payload fails the same way every time).
            self.failed += 1
            self.last_error = f"{name} event could not be encoded as JSON ({type(exc).__name__})"
            log.error("webhook: the %s event could not be encoded as JSON (%s); it is not sent", name,
                      type(exc).__name__)
            return
        self.store.add(name, body)
        with self._wake:
            self._wake.notify_all()

    # -- status ----------------------------------------------------------------------------------
    def pending(self) -> int:
        return self.store.count()

    @property
    def dropped(self) -> int:
        return self.store.dropped

    def status(self) -> dict:
        return {"pending": self.pending(), "delivered": self.delivered, "dropped": self.dropped,
                "failed": self.failed, "lastError": self.last_error, "queue": self.kind}

    # -- the sender thread -----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._wake:
                if self._stopping:
                    return
            try:
                item = self.store.head()
                unreadable = False
            except Exception as exc:  # the outbox's database is away: try again a little later
                self.last_error = f"outbox: {type(exc).__name__}"
                log.warning("cannot read the webhook outbox (%s); trying again in 5 s", type(exc).__name__)
                item, unreadable = None, True
            if item is None:
                if unreadable or self.store.durable:
                    # The outbox can also fill from another process (the previous worker); its count is
                    # a database query: asked outside the lock producers take to wake this thread.
                    pause = 5.0 if unreadable or not self.store.count() else 1.0
                    with self._wake:
                        if not self._stopping:
                            self._wake.wait(pause)
                else:
                    with self._wake:
                        if not self._stopping and not self.store.count():
                            self._wake.wait()
                continue
            key, name, body = item
            with self._wake:
                self._busy = True
            try:
                outcome = self._deliver(name, body)
                if outcome == DELIVERED:
                    self.store.remove(key)
                elif outcome in (REFUSED, GAVE_UP):
                    self.store.set_aside(key)
            except Exception:  # a bug here must not end the sender: the next events still go out
                log.exception("delivering a webhook event failed")
                with self._wake:
                    self._wake.wait(1.0)
            finally:
                with self._wake:
                    self._busy = False
                    self._wake.notify_all()

    def _deliver(self, name: str, text: str) -> str:
        body = text.encode()
        headers = {"Content-Type": "application/json", "User-Agent": "whatsapp-heroku-bot webhook"}
        event_id = json.loads(text).get("eventId")
        if event_id:
            headers[EVENT_ID_HEADER] = str(event_id)
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        forever = name in CRITICAL or self.store.durable
        delay = self._first_retry
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._session.post(self.url, data=body, headers=headers, timeout=self._timeout)
                if response.status_code < 300:
                    self.delivered += 1
                    return DELIVERED
                problem = f"HTTP {response.status_code}"
                if 400 <= response.status_code < 500 and response.status_code != 429:
                    # The receiver refuses this event; repeating it will not change its mind.
                    self.failed += 1
                    self.last_error = f"{name} event refused: {problem}"
                    log.error("webhook refused the %s event: %s", name, problem)
                    return REFUSED
            except requests.RequestException as exc:
                problem = type(exc).__name__  # never the URL: it may carry a token in its query
            self.last_error = f"{name} event: {problem}"
            if attempt >= self._attempts and not forever:
                self.failed += 1
                log.error("webhook gave up on the %s event after %d attempts (%s)", name, attempt, problem)
                return GAVE_UP
            log.warning("webhook delivery of the %s event failed (%s), retry %d in %.1fs", name, problem,
                        attempt, delay)
            with self._wake:
                closing = self._closing
                if self._wake.wait_for(lambda: self._stopping or self._closing != closing, timeout=delay):
                    if self._stopping:
                        return STOPPED
                    delay = self._first_retry  # the shutdown began: try now, then from the first delay
                    continue
            delay = min(delay * 2, MAX_RETRY_DELAY)
