"""Pacing that protects the number: at most SEND_RATE_LIMIT sends and chat actions a minute.

WhatsApp bans numbers that send too much, too fast, and a ban can be for good. A person sending by hand
never comes near the default; a bug in the owner's code that calls /api/send in a loop reaches it in
seconds and then gets 429 with Retry-After instead of sending on. The window moves (the `limits`
library's moving window): the count is always of the last 60 seconds, so a loop cannot send a double
burst across the edge of a fixed minute.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

log = logging.getLogger("pacing")

_KEY = "whatsapp-sends"  # one number, one budget: every kind of send shares it


class TooFast(RuntimeError):
    """The send budget of the last minute is spent; `retry_after` seconds until one more fits."""

    def __init__(self, per_minute: int, retry_after: int) -> None:
        super().__init__(
            f"more than {per_minute} sends and chat actions in the last minute (SEND_RATE_LIMIT): "
            f"try again in {retry_after} s. WhatsApp bans numbers that send too much, too fast"
        )
        self.per_minute = per_minute
        self.retry_after = retry_after


class SendPacer:
    """Counts every send and chat action that writes to a chat; `take()` raises TooFast past the limit.

    0 turns pacing off. Thread-safe: gunicorn's request threads share one pacer."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.refused = 0
        self._item = RateLimitItemPerMinute(per_minute) if per_minute > 0 else None
        self._limiter = MovingWindowRateLimiter(MemoryStorage()) if self._item else None
        self._lock = threading.Lock()
        self._warned_until = 0.0  # one warning per stretch of refusals, not one per request

    def take(self, what: str) -> None:
        if self._item is None:
            return
        if self._limiter.hit(self._item, _KEY):
            return
        reset, _ = self._limiter.get_window_stats(self._item, _KEY)
        retry_after = max(1, math.ceil(reset - time.time()))
        with self._lock:
            self.refused += 1
            warn = time.time() >= self._warned_until
            if warn:
                self._warned_until = time.time() + retry_after
        if warn:
            log.warning("send rate limit reached (%d per minute): refusing %s and further sends for %d s; "
                        "is code calling the API in a loop?", self.per_minute, what, retry_after)
        raise TooFast(self.per_minute, retry_after)

    def status(self) -> dict:
        return {"perMinute": self.per_minute, "refused": self.refused}
