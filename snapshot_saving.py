"""Saving a snapshot session (snapshot_session.py): one save at a time, under one deadline.

Saves are a single flight: one runs at a time, in its own thread, under one deadline (SAVE_DEADLINE)
that bounds the snapshot child process and every Platform API call and retry together. A save asked
while one runs joins it and gets its outcome; a caller that stops waiting leaves it running, visible in
`status()`, and never starts a second one. The snapshot itself is packed in a child process
(`python -m snapshot.child pack-json`): neonize may have the database open in this one.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import snapshot
from clock import iso_now
from errors import error_record

log = logging.getLogger("session")


class SaveInProgress(Exception):
    """The caller stopped waiting; the save goes on (see `SnapshotSession.status()['saveInProgress']`)."""

    def __init__(self, flight: "Flight") -> None:
        super().__init__(f"a save ({flight.reason}) is still running since {flight.started_at}")
        self.flight = flight


class Flight:
    """One save: its thread, and the outcome every waiter gets."""

    def __init__(self, reason: str, stop_saved_at: int | None = None) -> None:
        self.reason = reason
        self.stop_saved_at = stop_saved_at  # a save at the dyno's stop stamps the snapshot (stopsave.py)
        self.started_at = iso_now()
        self.done = threading.Event()
        self.result: dict | None = None
        self.error: BaseException | None = None

    def outcome(self) -> dict:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return dict(self.result)


class SingleFlightSaves:
    """Mixin of SnapshotSession: `save()` and the flight it runs. Uses the session's `store`,
    `save_deadline`, `_flight_lock`, `_flight`, `_waiters`, `_snapshot_child`, `refresh_local`."""

    def save(self, *, force: bool = False, reason: str = "requested", wait: float | None = 0.0,
             stop_saved_at: int | None = None, deadline: float | None = None) -> dict:
        """Pack and store the session, as one single flight; returns the outcome of the save.

        `wait`: seconds to wait for the flight (None: for as long as it takes, up to its deadline plus
        a little). Raises SaveInProgress when the flight is still running after that, else what the save
        raised (snapshot.SnapshotError, stores.StoreError)."""
        with self._flight_lock:
            flight = self._flight
            if flight is None or flight.done.is_set():
                flight = self._flight = Flight(reason, stop_saved_at)
                threading.Thread(target=self._fly, args=(flight, force, deadline), name="session-save",
                                 daemon=True).start()
            elif force or reason != flight.reason:
                log.info("a save (%s) is already running: %s waits for it", flight.reason, reason)
        limit = self.save_deadline + 2.0 if wait is None else wait
        if not flight.done.is_set():
            if not self._waiters.acquire(blocking=False):
                raise SaveInProgress(flight)
            try:
                flight.done.wait(limit)
            finally:
                self._waiters.release()
        if not flight.done.is_set():
            raise SaveInProgress(flight)
        return flight.outcome()

    def save_in_progress(self) -> dict | None:
        """The running save's reason and start, or None (the status's `saveInProgress`). The store's write
        returns before its flight ends, and a save asked for until then joins that flight."""
        flight = self._flight
        if flight is None or flight.done.is_set():
            return None
        return {"reason": flight.reason, "since": flight.started_at}

    def _fly(self, flight: Flight, force: bool, deadline: float | None = None) -> None:
        try:
            flight.result = self._save_now(force=force, reason=flight.reason, stamp=flight.stop_saved_at,
                                           deadline=min(deadline or float("inf"), time.monotonic() + self.save_deadline))
            self.last_save_error = None
        except BaseException as exc:  # every failure is the flight's outcome, never a dead thread
            flight.error = exc
            during = f"save ({flight.reason})"  # the same words in the status and the save_failed event
            self.last_save_error = error_record(exc, during, iso_now())
            # One line with the cause and what to do; BotError texts never hold a token or a snapshot.
            status = getattr(exc, "status", None)
            log.error("saving the session failed (%s): %s%s: %s", flight.reason, type(exc).__name__,
                      f", HTTP {status}" if status else "", exc)
            if isinstance(exc, Exception):
                self._report_failure(exc, during)
        finally:
            flight.done.set()

    def _save_now(self, *, force: bool, reason: str, deadline: float, stamp: int | None = None) -> dict:
        # The device as last read; read again when none is known yet (a save asked for right after a
        # pairing may come before the read that follows Connected): no Platform API call without one.
        if self._local_jid is None and self.refresh_local(timeout=deadline - time.monotonic()) is None:
            raise snapshot.SnapshotError("there is no logged-in session to save yet (pair first)")
        budget = self.store.budget(deadline=deadline)
        packed = self._pack(budget, deadline, stamp)
        if packed["overTarget"]:
            log.warning(
                "the session does not fit the %d-char target; using up to %d of the room the other config "
                "vars leave (the next `heroku config:set` may then fail)", budget.target, budget.ceiling,
            )
        text, info = packed["text"], packed["info"]
        if stamp is not None and snapshot.same_snapshot(packed["plain"], self.store.load()):
            # The session did not change since the stored snapshot: a stop never writes for nothing.
            self.last_save = {"at": iso_now(), "reason": reason, "changed": False, "size": len(packed["plain"]),
                              "tier": info["tier"], "budget": budget.ceiling, "target": budget.target,
                              "restartExpected": False}
            log.info("session unchanged (%s): the store already holds this snapshot; nothing written", reason)
            return dict(self.last_save)
        result = self.store.save(text, force=force, budget=budget, deadline=deadline)
        self._local_jid = self._stored_jid = info["device_jid"]
        self._stored_info = {"valid": True, **info}
        self.last_save = {
            "at": iso_now(),
            "reason": reason,
            "changed": result.changed,
            "size": len(text),
            "tier": info["tier"],
            "budget": budget.ceiling,
            "target": budget.target,
            "restartExpected": result.restart_expected,
        }
        if result.changed:
            log.info("session saved (%s): %d chars, tier=%s", reason, len(text), info["tier"])
        else:
            log.info("session unchanged (%s): the store already holds this snapshot; nothing written", reason)
        return dict(self.last_save)

    def _pack(self, budget, deadline: float, stamp: int | None = None) -> dict:
        """The snapshot and its description from one child process (see _snapshot_child)."""
        out = self._snapshot_child(
            "pack-json", str(self.session_dir.resolve()),
            "--target", str(budget.target), "--ceiling", str(budget.ceiling),
            *(["--stop-saved-at", str(stamp)] if stamp is not None else []),
            timeout=deadline - time.monotonic(),
        )
        packed = json.loads(out)
        error = packed.get("error")
        if error:
            if error["type"] == "SnapshotTooLarge":
                raise snapshot.SnapshotTooLarge(error["sizes"], error["budget"])
            raise snapshot.SnapshotError(error["message"])
        return packed

