"""What happens to the bot, told to its owner: the event vocabulary and the queue that POSTs events to
WEBHOOK_URL (signed like every webhook call, see webhook.sign).

Every event has one JSON shape: `{"event": name, "timestamp": ISO 8601 UTC, "data": {...}}`. The names
(the README's "Events" section shows each with an example):

    message            an incoming message (webhook.message_data)
    qr                 a new QR code to scan: code, expiresAt, index
    paired             a phone linked this device: jid
    connected          logged in to WhatsApp: jid
    disconnected       the connection was lost; reason, retryInSeconds (null: whatsmeow reconnects at once)
    logged_out         the device was removed: a new scan is needed. Never dropped from a full queue
    temporarily_banned WhatsApp refuses this number until `until`
    client_outdated    WhatsApp refuses this neonize version
    save_failed        saving (or wiping) the stored session failed: what, HTTP status, hint
    receipt            a message the bot sent was sent / delivered / read: id (as /api/send returned it)

neonize calls the event handlers on its own thread; a slow or dead webhook must never hold that thread
(whatsmeow would stop processing everything else, reconnects included). So `emit` only appends to a
bounded in-memory queue, and one sender thread delivers the events one by one, in order, retrying each
with exponential backoff. When the queue is full the oldest event that is not `logged_out` is dropped
(and counted). Nothing in an event may hold a token, a key or a snapshot: the producers put only our
own words, JIDs, ids and times in it.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time

import requests

from clock import iso_now
from recipients import jid_text
from webhook import SIGNATURE_HEADER, sign

log = logging.getLogger("webhook")

MESSAGE = "message"
QR = "qr"
PAIRED = "paired"
CONNECTED = "connected"
DISCONNECTED = "disconnected"
LOGGED_OUT = "logged_out"
TEMPORARILY_BANNED = "temporarily_banned"
CLIENT_OUTDATED = "client_outdated"
SAVE_FAILED = "save_failed"
RECEIPT = "receipt"
UNDECRYPTABLE = "undecryptable"

NAMES = (MESSAGE, QR, PAIRED, CONNECTED, DISCONNECTED, LOGGED_OUT, TEMPORARILY_BANNED, CLIENT_OUTDATED,
         SAVE_FAILED, RECEIPT, UNDECRYPTABLE)
#: Events a full queue never drops, and whose delivery is retried until it succeeds (or the receiver
#: refuses it with a 4xx): the owner must learn that a new scan is needed.
CRITICAL = frozenset({LOGGED_OUT})

DEFAULT_QUEUE_SIZE = 1000
DEFAULT_ATTEMPTS = 10
DEFAULT_FIRST_RETRY = 1.0
MAX_RETRY_DELAY = 60.0


def envelope(event: str, data: dict | None = None) -> dict:
    """The one shape of every webhook call."""
    return {"event": event, "timestamp": iso_now(), "data": dict(data or {})}


class EventQueue:
    """A bounded queue of events and the one thread that POSTs them, in order, with retries."""

    def __init__(
        self,
        url: str,
        secret: str | None = None,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        attempts: int = DEFAULT_ATTEMPTS,
        first_retry: float = DEFAULT_FIRST_RETRY,
        timeout: float = 10.0,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url
        self._secret = secret
        self.queue_size = queue_size
        self._queue: collections.deque[dict] = collections.deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._attempts = attempts
        self._first_retry = first_retry
        self._timeout = timeout
        self._session = session or requests.Session()
        self._thread: threading.Thread | None = None
        self._in_flight = 0  # the event being delivered (popped only once it is done)
        self.delivered = 0
        self.dropped = 0  # dropped from a full queue
        self.failed = 0  # given up after every attempt, or refused by the receiver (4xx)
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="webhook-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread:
            self._thread.join(timeout)

    # -- producers (any thread; never blocks on the network) --------------------------------------
    def emit(self, event: str, data: dict | None = None) -> None:
        self.enqueue(envelope(event, data))

    def enqueue(self, payload: dict) -> None:
        """Append a ready payload. Never blocks: called from neonize's event thread."""
        with self._wake:
            if len(self._queue) >= self.queue_size:
                self._drop_one()
            self._queue.append(payload)
            self._wake.notify()

    def _drop_one(self) -> None:
        # The head may be in delivery right now: it is never the one dropped.
        start = 1 if self._in_flight else 0
        for index in range(start, len(self._queue)):
            if self._queue[index].get("event") not in CRITICAL:
                dropped = self._queue[index]
                del self._queue[index]
                self.dropped += 1
                log.warning("webhook queue full (%d): dropped the oldest %s event", self.queue_size,
                            dropped.get("event", "message"))
                return
        # Only critical events queued: keep them all (a logout is rare; the queue grows by one).

    # -- status --------------------------------------------------------------------------------------
    def pending(self) -> int:
        return len(self._queue)

    def status(self) -> dict:
        return {"pending": self.pending(), "delivered": self.delivered, "dropped": self.dropped,
                "failed": self.failed, "lastError": self.last_error}

    # -- the sender thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                payload = self._queue[0]
                self._in_flight = 1
            try:
                self._deliver(payload)
            except Exception:  # a bug here must not end the sender: the next events still go out
                log.exception("delivering a webhook event failed")
            with self._wake:
                self._in_flight = 0
                if self._queue and self._queue[0] is payload:
                    self._queue.popleft()

    def _deliver(self, payload: dict) -> None:
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "whatsapp-heroku-bot webhook"}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        name = payload.get("event", "message")
        critical = name in CRITICAL
        delay = self._first_retry
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._session.post(self.url, data=body, headers=headers, timeout=self._timeout)
                if response.status_code < 300:
                    self.delivered += 1
                    return
                problem = f"HTTP {response.status_code}"
                if 400 <= response.status_code < 500 and response.status_code != 429:
                    # The receiver refuses this event; repeating it will not change its mind.
                    self.failed += 1
                    self.last_error = f"{name} event refused: {problem}"
                    log.error("webhook refused the %s event: %s", name, problem)
                    return
            except requests.RequestException as exc:
                problem = type(exc).__name__  # never the URL: it may carry a token in its query
            self.last_error = f"{name} event: {problem}"
            if attempt >= self._attempts and not critical:
                self.failed += 1
                log.error("webhook gave up on the %s event after %d attempts (%s)", name, attempt, problem)
                return
            log.warning("webhook delivery of the %s event failed (%s), retry %d in %.1fs", name, problem,
                        attempt, delay)
            with self._wake:
                if self._wake.wait_for(lambda: self._stopping, timeout=delay):
                    return
            delay = min(delay * 2, MAX_RETRY_DELAY)


# -- the `message` event: an incoming message ----------------------------------------------------

def message_payload(event) -> dict | None:
    """The webhook JSON for a neonize Message event; None for what is not worth forwarding.

    The `message` event's shape (`{"event", "timestamp", "data"}`), with the message's fields also at
    the top level, where receivers written before events read them."""
    data = message_data(event)
    if data is None:
        return None
    return {**data, **envelope(MESSAGE, data)}


def message_data(event) -> dict | None:
    """An incoming message's fields; None for the bot's own messages."""
    info = event.Info
    source = info.MessageSource
    if source.IsFromMe:
        return None
    message = event.Message
    text = (
        message.conversation
        or message.extendedTextMessage.text
        or message.imageMessage.caption
        or message.videoMessage.caption
        or message.documentMessage.caption
        or ""
    )
    return {
        "id": info.ID,
        "from": jid_text(source.Sender),
        "chat": jid_text(source.Chat),
        "isGroup": bool(source.IsGroup),
        "pushName": info.Pushname,
        "time": int(info.Timestamp),
        "type": info.Type or ("text" if text else "other"),
        "mediaType": info.MediaType or None,
        "text": text,
        "receivedAt": int(time.time()),
    }
