"""The webhook's signature, and what an incoming message looks like on it.

Every call to WEBHOOK_URL carries `X-Signature-256: sha256=<hex>` (HMAC-SHA256 of the exact body with
WEBHOOK_SECRET) when a secret is set. The queue that delivers events (incoming messages among them) and
the event vocabulary live in events.py.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import events
from recipients import jid_text

SIGNATURE_HEADER = "X-Signature-256"


def sign(secret: str, body: bytes) -> str:
    """`sha256=<hex>` HMAC of the exact body bytes (the receiver recomputes it over the raw body)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def message_payload(event) -> dict | None:
    """The webhook JSON for a neonize Message event; None for what is not worth forwarding.

    The `message` event's shape (`{"event", "timestamp", "data"}`), with the message's fields also at
    the top level, where receivers written before events read them."""
    data = message_data(event)
    if data is None:
        return None
    return {**data, **events.envelope(events.MESSAGE, data)}


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
