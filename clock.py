"""Timestamps as the API and the logs show them: ISO 8601, UTC, to the second."""

from __future__ import annotations

import time


def iso_now() -> str:
    return iso_from_epoch(time.time())


def iso_from_epoch(epoch: float | None) -> str | None:
    """`2026-11-25T23:19:04Z` for a time.time() value; None stays None."""
    if epoch is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
