"""The one error family of the bot: every error a user can act on carries a hint.

`requests` has one base exception and a subclass per thing a caller can act on; so do we. The
snapshot code, the stores, the Heroku Platform API client and the PostgreSQL session all raise
subclasses of `BotError`, so the API and the CLI format every failure the same way:
`message (hint: what to do)`. No message or hint ever holds a token, a password or a snapshot.
"""

from __future__ import annotations


class BotError(Exception):
    """A failure with a `message` (what happened) and a `hint` (what the user can do about it).

    Subclasses set a class-level `hint`; an instance may carry a more specific one. `status` is the
    HTTP status an upstream service answered, when there was one."""

    hint: str = ""
    #: What went wrong in our own fixed words, for readers without the API key: no upstream text in it.
    summary: str = "the bot hit an error"

    def __init__(self, message: str, hint: str | None = None, *, status: int | None = None):
        super().__init__(message)
        self.message = message
        if hint:
            self.hint = hint
        self.status = status

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message

    def public_text(self) -> str:
        """Our own words, the HTTP status and the class's hint (an instance's hint may name the app)."""
        status = f" (HTTP {self.status})" if self.status else ""
        hint = type(self).hint
        return f"{self.summary}{status}" + (f" (hint: {hint})" if hint else "")

    def as_dict(self) -> dict:
        return {"type": type(self).__name__, "status": self.status, "message": self.message,
                "hint": self.hint or None, "summary": self.public_text()}


def error_record(exc: BaseException, during: str, at: str, message: str | None = None) -> dict:
    """A failure as a status answer keeps it: type, upstream status, message, hint, when and during what.
    The API shows the message and hint to key holders only (session_manager.public_view)."""
    if isinstance(exc, BotError):
        record = exc.as_dict()
    else:
        record = {"type": type(exc).__name__, "status": None, "message": str(exc), "hint": None}
    if message:
        record["message"] = f"{message}: {record['message']}"
    return {**record, "during": during, "at": at}


def failure_event(exc: BaseException, during: str) -> dict:
    """A failed save or wipe as the `save_failed` event tells it (events.py): our own words, the HTTP
    status and the hint, never the upstream text (it may quote what was sent)."""
    if isinstance(exc, BotError):
        return {"during": during, "error": type(exc).__name__, "status": exc.status,
                "message": exc.summary, "hint": exc.hint or None}
    return {"during": during, "error": type(exc).__name__, "status": None,
            "message": "the bot hit an error", "hint": None}
