"""What happens to the bot, told to its owner: the event vocabulary, the one shape of an event, and
the hub every producer hands its events to (`Events`).

Every event has one JSON shape: `{"eventId": unique id, "event": name, "timestamp": ISO 8601 UTC,
"data": {...}}`. The id stays the same when an event is sent again (a retry, a restart that found it
still in the outbox), so a receiver drops what it already has. The names (the README's "Events"
section shows each with an example):

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
    unreachable        WhatsApp out of reach past UNREACHABLE_GRACE (once per outage): cause, since, seconds
    logged_out         the device was removed: a new scan is needed. Never dropped from a full queue
    temporarily_banned WhatsApp refuses this number until `until`
    client_outdated    WhatsApp refuses this neonize version
    save_failed        saving (or wiping) the stored session failed: what, HTTP status, hint
    receipt            a message the bot sent was sent / delivered / read: id (as /api/send returned it)

neonize calls the event handlers on its own thread; a slow or dead webhook must never hold that thread
(whatsmeow would stop processing everything else, reconnects included). So producers only hand events
to a queue (delivery.py: in memory, or outbox.py: a table next to the session in PostgreSQL), and one
sender thread delivers them. Nothing in an event may hold a token, a key or a snapshot: the producers
put only our own words, JIDs, ids and times in it.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
import uuid

import incoming_media
from clock import iso_now
from recipients import jid_text
from textsafe import proto_text

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
UNREACHABLE = "unreachable"
REACTION = "reaction"
EDIT = "edit"
DELETE = "delete"
CALL = "call"
UNDECRYPTABLE = "undecryptable"

NAMES = (MESSAGE, QR, PAIRED, CONNECTED, DISCONNECTED, UNREACHABLE, LOGGED_OUT, TEMPORARILY_BANNED,
         CLIENT_OUTDATED, SAVE_FAILED, RECEIPT, REACTION, EDIT, DELETE, CALL, UNDECRYPTABLE)
#: Events a full queue never drops, and whose delivery is retried until it succeeds (or the receiver
#: refuses it with a 4xx): the owner must learn that a new scan is needed.
CRITICAL = frozenset({LOGGED_OUT})

#: How many events the owner's page (qrpage.py) lists.
RECENT = 20


def envelope(event: str, data: dict | None = None) -> dict:
    """The one shape of every webhook call. `eventId` (not `id`: a `message` event carries the
    message's id at the top level too, for receivers written before events) is new for every event."""
    return {"eventId": uuid.uuid4().hex, "event": event, "timestamp": iso_now(), "data": dict(data or {})}


def encode(payload: dict) -> str:
    """The JSON body of an event, as sent, signed and kept in the outbox. Bytes anywhere in it (a proto2
    string field that is not UTF-8) are decoded with replacement; anything else JSON cannot carry raises
    TypeError (or ValueError for a circular reference)."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, default=_jsonable)


def _jsonable(value):
    if isinstance(value, (bytes, bytearray)):
        return proto_text(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def summary(payload: dict) -> str:
    """One line in our own words for the owner's page: what happened, never a message text, a QR code,
    a key or what an upstream service answered (those lines are read by whoever opens the page)."""
    name = payload.get("event") or MESSAGE
    data = payload.get("data") or {}

    def short(value) -> str:
        return str(value or "?")[:60]

    if name == MESSAGE:
        kind = data.get("mediaType") or data.get("type") or "message"
        where = " in a group" if data.get("isGroup") else ""
        return f"{short(kind)} message from {short(data.get('from'))}{where}"
    if name == QR:
        return f"QR code {data.get('index') or '?'} shown, valid until {short(data.get('expiresAt'))}"
    if name == PAIRED:
        return f"a phone linked this bot as {short(data.get('jid'))}"
    if name == CONNECTED:
        after = data.get("outageSeconds")
        return f"logged in to WhatsApp as {short(data.get('jid'))}" + (
            f", after {after:.0f} s out of reach" if isinstance(after, (int, float)) else "")
    if name == UNREACHABLE:
        return f"WhatsApp out of reach for {data.get('seconds', '?')} s: {short(data.get('cause'))}"
    if name == DISCONNECTED:
        retry = data.get("retryInSeconds")
        return "the connection was lost; " + ("reconnecting at once" if retry is None else f"retrying in {retry} s")
    if name == LOGGED_OUT:
        return "the device was logged out: a new QR scan is needed"
    if name == TEMPORARILY_BANNED:
        return f"WhatsApp banned this number for a while, until {short(data.get('until'))}"
    if name == CLIENT_OUTDATED:
        return "WhatsApp refuses this client version: upgrade neonize"
    if name == SAVE_FAILED:
        status = f" (HTTP {data['status']})" if data.get("status") else ""
        return f"{short(data.get('during'))} failed: {short(data.get('error'))}{status}"
    if name == REACTION:
        return f"{'a reaction taken back' if data.get('removed') else 'a reaction'} from {short(data.get('from'))}"
    if name == EDIT:
        return f"{short(data.get('from'))} edited a message"
    if name == DELETE:
        return f"{short(data.get('from'))} deleted a message for everyone"
    if name == CALL:
        kind = "video call" if data.get("video") else "call"
        return f"{kind} from {short(data.get('from'))}" + (" (declined)" if data.get("rejected") else "")
    if name == RECEIPT:
        return f"message {short(data.get('id'))} {short(data.get('status'))} ({short(data.get('chat'))})"
    return f"{short(name)} event"


class Events:
    """Where every producer (the connection, the session) hands its events: the last `RECENT` are kept
    for the owner's page, and with WEBHOOK_URL each goes to the delivery queue (delivery.EventQueue).

    Never blocks on the network and never raises into the producer's thread (neonize's, usually)."""

    def __init__(self, queue=None, *, recent: int = RECENT) -> None:
        self.queue = queue  # delivery.EventQueue, or None without WEBHOOK_URL
        self._recent: collections.deque[dict] = collections.deque(maxlen=recent)
        self._last: dict[str, str] = {}  # event name -> when the last one happened
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return True  # producers test `if self._webhook:`; the page wants every event, webhook or not

    def emit(self, event: str, data: dict | None = None) -> None:
        self.enqueue(envelope(event, data))

    def enqueue(self, payload: dict) -> None:
        try:
            line = {"at": payload.get("timestamp") or iso_now(), "event": payload.get("event") or MESSAGE,
                    "summary": summary(payload)}
        except Exception:  # a summary must never cost the event itself
            line = {"at": iso_now(), "event": str(payload.get("event")), "summary": "an event"}
        with self._lock:
            self._recent.append(line)
            self._last[line["event"]] = line["at"]
        if self.queue is not None:
            try:
                self.queue.enqueue(payload)
            except Exception:
                log.exception("could not queue the %s event", line["event"])

    def recent(self) -> list[dict]:
        """The last events, newest first: time, name and a summary in our own words."""
        with self._lock:
            return list(reversed(self._recent))

    def last_seen(self) -> dict[str, str]:
        """When the last event of each name happened since this start (/api/session-status
        `lastEvents`): the status's counterpart of every event, traffic (message, receipt) included."""
        with self._lock:
            return dict(self._last)

    def status(self) -> dict | None:
        return self.queue.status() if self.queue is not None else None

    def stop(self, timeout: float = 0.0) -> None:
        """The connection's stop calls this; delivery goes on: the worker's exit hook (gunicorn.conf.py)
        drains the queue within Heroku's grace with `close()`, after the connection has stopped."""

    def close(self, deadline: float | None = None) -> int:
        """Deliver what is queued until `deadline` (time.monotonic()), then stop; returns how many
        events were left undelivered (0 without a webhook)."""
        if self.queue is None:
            return 0
        return self.queue.close(deadline if deadline is not None else time.monotonic())


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


# What a message may hold besides its content: a group member's sender key (whatsmeow message.go
# `handleSenderKeyDistributionMessage` takes it before dispatching) and the context every message has.
KEY_SHARE_FIELDS = {"senderKeyDistributionMessage", "fastRatchetKeySenderKeyDistributionMessage", "messageContextInfo"}


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
    if not {field.name for field, _ in message.ListFields()} - KEY_SHARE_FIELDS:
        return None  # only a group's sender key (a member's first message carries it alone): no news
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
