"""Outages: WhatsApp out of the bot's reach (lost and not back, or never connected since the start), told
to the owner once per outage as an `unreachable` event after a grace (UNREACHABLE_GRACE, 60 s), with the
cause and how long it has lasted. The next login (`connected`) ends it.

A grace, because a bot reconnects all the time for reasons that are no news: whatsmeow's own reconnect
after a dropped socket (a second), the daily restart's login (a few seconds), a stream replaced during a
deploy. What lasts longer than a minute is news: the owner's messages are not going out.

Not an outage: waiting for a scan (WhatsApp answers, it shows QR codes), a logout, a ban or a refused
client version; those have events of their own, and `pause()` ends the outage without a word.

The timer is a threading.Timer, so the event comes on time even while the connect loop waits out a long
backoff; nothing here blocks or raises into the caller's thread (neonize's, often).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from clock import iso_from_epoch
from logsetup import secret_filter
from textsafe import printable

log = logging.getLogger("whatsapp")

UNREACHABLE = "unreachable"
NEVER_CONNECTED = "not connected to WhatsApp since the start"
#: The causes in our own words (the event's `cause`); what failed exactly goes in `detail`, masked.
NO_ANSWER = "WhatsApp does not answer (the network, a proxy or WhatsApp itself is down)"
CONNECT_FAILED = "connecting to WhatsApp failed"
CONNECTION_LOST = "the connection to WhatsApp was lost"
DETAIL_CHARS = 200


class OutageWatch:
    def __init__(self, grace: float, emit: Callable[[str, dict], None]) -> None:
        self.grace = grace
        self._emit = emit
        self._lock = threading.Lock()
        self._since: float | None = None  # time.time() the outage began
        self._began: float = 0.0  # time.monotonic() of the same moment: how long, whatever the wall clock does
        self._cause: str | None = None
        self._detail: str | None = None
        self._reported = False
        self._timer: threading.Timer | None = None
        self._outage = 0  # which outage a timer belongs to (a late timer of an ended one does nothing)
        self.reported_total = 0

    def begin(self, cause: str = "", detail: str | None = None) -> None:
        """WhatsApp is out of reach (again): starts an outage, or goes on with the running one.
        `cause` in our own words (the constants above): what began the outage (the start's outage takes
        the first cause that comes); `detail`: what failed last, as the library said it."""
        with self._lock:
            if cause and not self._cause:
                self._cause = cause  # what began it; a later failed attempt updates the detail only
            if detail:
                # Upstream text: one printable line, no secret (a proxy URL may carry a password).
                self._detail = printable(secret_filter.mask(detail), DETAIL_CHARS)
            if self._since is not None:
                return
            self._since, self._began, self._reported = time.time(), time.monotonic(), False
            self._outage += 1
            self._timer = threading.Timer(self.grace, self._due, args=(self._outage,))
            self._timer.daemon = True
            self._timer.name = "unreachable-timer"
            self._timer.start()

    def end(self) -> float | None:
        """Logged in: the outage is over. Returns its length in seconds when the owner was told of it
        (the `connected` event then says how long it lasted), else None."""
        with self._lock:
            reported, began = self._reported, self._began
            running = self._since is not None
            self._clear()
        if running and reported:
            seconds = round(time.monotonic() - began, 1)
            log.info("WhatsApp reachable again after %.0fs", seconds)
            return seconds
        return None

    def pause(self) -> None:
        """Not an outage after all (a scan is awaited, logged out, banned): forget it without an event."""
        with self._lock:
            self._clear()

    def stop(self) -> None:
        self.pause()

    def _clear(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._since, self._cause, self._detail, self._reported = None, None, None, None, False

    def _due(self, outage: int) -> None:
        with self._lock:
            if outage != self._outage or self._since is None or self._reported:
                return
            self._reported = True
            self._cause = self._cause or NEVER_CONNECTED  # as told: the status keeps saying the same
            self.reported_total += 1
            data = self._data()
        log.warning("WhatsApp out of reach for %.0fs: %s", data["seconds"], data["cause"])
        try:
            self._emit(UNREACHABLE, data)
        except Exception:
            log.exception("could not queue the unreachable event")

    def _data(self) -> dict:
        return {"cause": self._cause or NEVER_CONNECTED, "detail": self._detail,
                "since": iso_from_epoch(self._since), "seconds": round(time.monotonic() - self._began, 1)}

    def status(self) -> dict | None:
        """The running outage as /api/session-status shows it (`unreachable`): since, cause, how long,
        and whether the owner was told (`reported`); None while WhatsApp is in reach."""
        with self._lock:
            if self._since is None:
                return None
            return {**self._data(), "reported": self._reported}
