"""The WhatsApp connection, split by concern as whatsmeow splits its client:

| module | holds |
|---|---|
| client.py | `Connection`: lifecycle, the lock, status |
| connectloop.py | the connect loop: restore, probe, connect, backoff, recycle |
| connectionevents.py | connected, logged out, replaced, banned, outdated, disconnected, keep-alive |
| pair.py | QR codes, the pairing code, pair status |
| message.py | incoming messages, the recent-message cache for quotes |
| receipt.py | delivery and read receipts of what the bot sent |
| send.py | text, document, image, voice note and location sends (to a number or a group), paced |
| chat.py | read marks, typing/recording, reactions, edits, deletes for everyone |
| user.py | which phone numbers are on WhatsApp |
| group.py | the groups the account is in |
| refused.py | why a chat action did not happen: the caller's mistake or WhatsApp's refusal |
| download.py | customers' files: their keys as they arrive, the checked download GET /api/media asks for |
| call.py | calls offered to the number: the `call` event, declined with REJECT_CALLS |
| factory.py | the neonize client (or a test seam's) |
| backoff.py, states.py | retry delays; the states the API reports |
"""

import time  # noqa: F401  (tests read whatsapp.time, as they did when this was one module)

from whatsapp.backoff import Backoff
from whatsapp.client import Connection
from whatsapp.connectloop import DEFAULT_MAX_CONNECTS
from whatsapp.connectionevents import CLIENT_OUTDATED_DELAY, STREAM_REPLACED_DELAY
from whatsapp.factory import default_client_factory, load_client_factory
from whatsapp.message import RECENT_MESSAGES
from whatsapp.pair import QR_FIRST_CODE_SECONDS, QR_NEXT_CODE_SECONDS, QR_ROUND_TIMEOUT
from whatsapp.states import (
    CLIENT_OUTDATED,
    CONNECTED,
    CONNECTING,
    LOGGED_OUT,
    NOT_STARTED,
    RECONNECTING,
    RESTORING,
    STARTING,
    STOPPED,
    TEMPORARILY_BANNED,
    WAITING_FOR_QR,
    NotConnected,
)

__all__ = [
    "Backoff", "Connection", "DEFAULT_MAX_CONNECTS", "NotConnected", "default_client_factory",
    "load_client_factory", "CLIENT_OUTDATED_DELAY", "STREAM_REPLACED_DELAY", "RECENT_MESSAGES",
    "QR_FIRST_CODE_SECONDS", "QR_NEXT_CODE_SECONDS", "QR_ROUND_TIMEOUT", "CLIENT_OUTDATED", "CONNECTED",
    "CONNECTING", "LOGGED_OUT", "NOT_STARTED", "RECONNECTING", "RESTORING", "STARTING", "STOPPED",
    "TEMPORARILY_BANNED", "WAITING_FOR_QR",
]
