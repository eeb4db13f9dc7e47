"""What happens to the bot, told to its owner: the event vocabulary and the queue that POSTs events to
WEBHOOK_URL (signed like every webhook call, see webhook.sign).

Every event has one JSON shape: `{"event": name, "timestamp": ISO 8601 UTC, "data": {...}}`. The names
(the README's "Events" section shows each with an example):

    message            an incoming message; a photo, video, voice note, document or sticker is described in
                       `media` (incoming_media.describe), fetched with GET /api/media/<id>
    reaction           a peer reacted to a message (an emoji; empty when the reaction was taken back)
    edit               a peer edited one of its messages: the message's id and its new text
    delete             a peer deleted one of its messages for everyone
    call               a peer called the number; `rejected` says whether the bot declined it (REJECT_CALLS)
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

import incoming_media
from clock import iso_now
from recipients import jid_text
from textsafe import proto_text
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
REACTION = "reaction"
EDIT = "edit"
DELETE = "delete"
CALL = "call"

NAMES = (MESSAGE, QR, PAIRED, CONNECTED, DISCONNECTED, LOGGED_OUT, TEMPORARILY_BANNED, CLIENT_OUTDATED,
         SAVE_FAILED, RECEIPT, REACTION, EDIT, DELETE, CALL)
#: Events a full queue never drops, and whose delivery is retried until it succeeds (or the receiver
#: refuses it with a 4xx): the owner must learn that a new scan is needed.
CRITICAL = frozenset({LOGGED_OUT})

DEFAULT_QUEUE_SIZE = 1000
DEFAULT_ATTEMPTS = 10
DEFAULT_FIRST_RETRY = 1.0
MAX_RETRY_DELAY = 60.0


def encode(payload: dict) -> bytes:
    """The JSON body of an event. Bytes anywhere in it (a proto2 string field that is not UTF-8) are
    decoded with replacement; anything else JSON cannot carry raises TypeError (or ValueError for a
    circular reference)."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, default=_jsonable).encode()


def _jsonable(value):
    if isinstance(value, (bytes, bytearray)):
        return proto_text(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


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
        name = payload.get("event", "message")
        try:
            body = encode(payload)
        except (TypeError, ValueError) as exc:
            # A producer put something in the event that JSON cannot carry: counted and said, never
            # dropped in silence (nor retried: the same payload fails the same way).
            self.failed += 1
            self.last_error = f"{name} event could not be encoded as JSON ({type(exc).__name__})"
            log.error("webhook: the %s event could not be encoded as JSON (%s); it is not sent", name,
                      type(exc).__name__)
            return
        headers = {"Content-Type": "application/json", "User-Agent": "whatsapp-heroku-bot webhook"}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
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


# -- what a peer's message is: a message, a reaction, an edit or a delete ----------------------------

# waE2E.ProtocolMessage.Type values (WAWebProtobufsE2E.proto): whatsmeow's BuildRevoke and BuildEdit.
PROTOCOL_REVOKE = 0
PROTOCOL_MESSAGE_EDIT = 14


def message_payload(event) -> dict | None:
    """The webhook JSON for a neonize Message event that is a new message; None for the bot's own
    messages and for reactions, edits and deletes (incoming_event names those).

    The `message` event's shape (`{"event", "timestamp", "data"}`), with the message's fields also at
    the top level, where receivers written before events read them."""
    found = incoming_event(event)
    if found is None or found[0] != MESSAGE:
        return None
    return payload(*found)


def payload(name: str, data: dict) -> dict:
    """The webhook JSON of an event; a `message` also has its fields at the top level."""
    if name == MESSAGE:
        return {**data, **envelope(MESSAGE, data)}
    return envelope(name, data)


def incoming_event(event) -> tuple[str, dict] | None:
    """(event name, data) for a peer's neonize Message event: `message`, `reaction`, `edit` or
    `delete`; None for the bot's own messages and for protocol messages that are no news to an owner
    (history sync, key shares, disappearing-mode settings...).

    An edit arrives unwrapped (whatsmeow types/events `UnwrapRaw`: IsEdit, the EditedMessage's MESSAGE_EDIT
    protocol message as the Message); a delete for everyone is a REVOKE protocol message naming the
    message's id; a reaction a reactionMessage naming the id it reacts to."""
    info = event.Info
    source = info.MessageSource
    if source.IsFromMe:
        return None
    message = event.Message
    who = {"from": jid_text(source.Sender), "chat": jid_text(source.Chat), "isGroup": bool(source.IsGroup),
           "time": unix_seconds(info.Timestamp)}
    if message.HasField("reactionMessage"):
        reaction = message.reactionMessage
        return REACTION, {"id": info.ID, "messageId": reaction.key.ID, **who, "emoji": reaction.text,
                          "removed": reaction.text == ""}
    if message.HasField("protocolMessage"):
        protocol = message.protocolMessage
        if protocol.type == PROTOCOL_MESSAGE_EDIT and protocol.HasField("editedMessage"):
            return EDIT, {"id": protocol.key.ID, "editId": info.ID, **who, "text": _text(protocol.editedMessage)}
        if protocol.type == PROTOCOL_REVOKE and protocol.HasField("key"):
            return DELETE, {"id": protocol.key.ID, "deleteId": info.ID, **who}
        return None
    return MESSAGE, message_data(event)


def message_data(event) -> dict | None:
    """An incoming message's fields; None for the bot's own messages."""
    info = event.Info
    source = info.MessageSource
    if source.IsFromMe:
        return None
    message = event.Message
    text = _text(message)
    return {
        "id": proto_text(info.ID),
        "from": jid_text(source.Sender),
        "chat": jid_text(source.Chat),
        "isGroup": bool(source.IsGroup),
        "pushName": proto_text(info.Pushname),
        "time": unix_seconds(info.Timestamp),
        "type": proto_text(info.Type) or ("text" if text else "other"),
        "mediaType": proto_text(info.MediaType) or None,
        "media": incoming_media.describe(message, info.ID),
        "text": text,
        "receivedAt": int(time.time()),
    }


def unix_seconds(value) -> int:
    """A neonize timestamp as Unix seconds: neonize hands whatsmeow's times over in milliseconds for
    messages and calls (seconds for receipts); a value past 10^11 (year 5138 in seconds) is milliseconds."""
    value = int(value)
    return value // 1000 if value > 10**11 else value


def _text(message) -> str:
    # proto_text: a field that is not valid UTF-8 comes as bytes (proto2), decoded with replacement.
    return proto_text(
        message.conversation
        or message.extendedTextMessage.text
        or message.imageMessage.caption
        or message.videoMessage.caption
        or message.documentMessage.caption
        or ""
    )


def call_data(offer) -> dict:
    """A neonize CallOffer (whatsmeow call.go `handleCallEvent`, `<offer>`) as the `call` event's data;
    the caller named by phone number when WhatsApp gave both (call-creator on a LID, caller_pn)."""
    meta = offer.basicCallMeta
    caller = meta.callCreator
    if caller.Server == "lid" and meta.callCreatorAlt.User:
        caller = meta.callCreatorAlt
    return {"id": meta.callID, "from": jid_text(caller), "time": unix_seconds(meta.timestamp),
            "video": any(node.Tag == "video" for node in offer.data.Nodes)}
