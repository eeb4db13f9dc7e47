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

    def __init__(self, message: str, hint: str | None = None, *, status: int | None = None):
        super().__init__(message)
        self.message = message
        if hint:
            self.hint = hint
        self.status = status

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message

    def as_dict(self) -> dict:
        return {"type": type(self).__name__, "status": self.status, "message": self.message,
                "hint": self.hint or None}


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
