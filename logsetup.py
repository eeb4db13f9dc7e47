"""Logging for `heroku logs`: stdout, one event per line, and no secret in any line.

Heroku's log router keeps each line of stdout as one log event, so a record that spans lines (a
traceback, a library's multi-line message) is folded into one line. Secrets are masked by a filter on
the handler itself, so it also covers what libraries (urllib3, neonize, gunicorn) log through us:
the configured secret values (short ones as whole words only), plus anything that looks like a bearer token or a
snapshot (a long run of base64) whoever logs it.
"""

from __future__ import annotations

import logging
import sys
import threading

from redaction import MASK, mask  # noqa: F401 - MASK is part of this module's surface

class SecretFilter(logging.Filter):
    """Rewrites each record's message so no registered secret or secret-looking value survives."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._all: frozenset[str] = frozenset()

    def add(self, *values: str | None) -> None:
        """Register values to mask, whatever their length (short ones are masked as whole words)."""
        with self._lock:
            self._all = frozenset(self._all | {v for v in values if v})

    def mask(self, text: str) -> str:
        return mask(text, self._all)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        masked = self.mask(message)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        # Freeze the masked text: args are dropped so formatting cannot bring the secret back.
        record.msg, record.args = masked, None
        return True


class OneLineFormatter(logging.Formatter):
    """`level logger: message`, with any traceback folded onto the same line.

    With `timestamps` each line starts with the local time the way gunicorn's own lines carry it
    (`[2024-05-01 12:00:00 +0200]`). On Heroku the log router stamps every line itself, so there the
    bot's lines go without (they would carry two times)."""

    def __init__(self, timestamps: bool = False) -> None:
        fmt = "%(levelname)s %(name)s: %(message)s"
        if timestamps:
            super().__init__("[%(asctime)s] " + fmt, datefmt="%Y-%m-%d %H:%M:%S %z")
        else:
            super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text.replace("\r", "").replace("\n", " | ")


secret_filter = SecretFilter()
_handler: logging.Handler | None = None


def configure_logging(
    level: str = "INFO", secrets: list[str] | tuple[str, ...] = (), *, timestamps: bool = False
) -> None:
    """Send every logger's records to stdout through the masking filter; safe to call again.

    `timestamps`: start each line with the time (off on Heroku, whose router adds it)."""
    global _handler
    secret_filter.add(*secrets)
    root = logging.getLogger()
    if _handler is None:
        _handler = logging.StreamHandler(sys.stdout)
        _handler.addFilter(secret_filter)
        root.addHandler(_handler)
    _handler.setFormatter(OneLineFormatter(timestamps))
    root.setLevel(level)
    # urllib3 at DEBUG prints request lines; keep it at INFO+ whatever the bot's level is.
    logging.getLogger("urllib3").setLevel(max(logging.INFO, root.level))
