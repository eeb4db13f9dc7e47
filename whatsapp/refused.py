"""Why a chat action did not happen, in words the API passes on: the caller's mistake (400) or
WhatsApp's refusal (502, neonize's error text)."""

from __future__ import annotations

from textsafe import printable


class NotOwnMessage(ValueError):
    """An edit or delete of a message the bot knows another account sent."""


class SenderNeeded(ValueError):
    """A group message the bot has not seen: who sent it must be given."""


class WhatsAppRefused(RuntimeError):
    """whatsmeow (through neonize) refused or failed the action; the text is its own, escaped."""


def calling(function, *args, **kwargs):
    """function(*args, **kwargs) with neonize's errors (NeonizeError and its kin, one class per Go
    function) turned into WhatsAppRefused."""
    try:
        return function(*args, **kwargs)
    except Exception as exc:
        raise WhatsAppRefused(f"WhatsApp refused: {printable(str(exc))[:300]}") from exc
