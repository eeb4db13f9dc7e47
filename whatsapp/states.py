"""The states the connection reports (in /api/health and /api/session-status), and what the connect
loop does next once neonize's `connect()` has returned."""

from __future__ import annotations

from dataclasses import dataclass

STARTING = "starting"
RESTORING = "restoring"
CONNECTING = "connecting"
WAITING_FOR_QR = "waiting_for_qr"
CONNECTED = "connected"
RECONNECTING = "reconnecting"
LOGGED_OUT = "logged_out"
TEMPORARILY_BANNED = "temporarily_banned"
CLIENT_OUTDATED = "client_outdated"
STOPPED = "stopped"
NOT_STARTED = "not_started"


class NotConnected(RuntimeError):
    """The action needs a live WhatsApp connection and there is none right now."""


@dataclass
class Next:
    """What the connect loop does once `connect()` has returned; event handlers set it."""

    reason: str
    delay: float | None = None  # None: take the next backoff delay
    wipe: bool = False
    state: str = RECONNECTING
