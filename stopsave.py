"""Whether to save the live session while the dyno stops, so the next boot starts from today's sessions.

Heroku restarts every dyno once a day (SIGTERM, then SIGKILL 30 s later) and the next boot restores the
stored snapshot: without this save, that is the one made at pairing, and every peer who wrote since
then costs two retry rounds again after every restart (or a lost message, when its client does not
answer retry receipts). A save writes the config var: Heroku makes a release and restarts the dyno once
more. So it must never loop, and never happen for nothing:

- nothing changed: the packed session equals the stored one (compared without the manifest, see
  snapshot.format.same_snapshot), so nothing is written; an idle bot never saves;
- at most one a day: the snapshot carries the time of the stop save that made it (`stopSavedAt` in its
  manifest); a stop within STOP_SAVE_EVERY of it saves nothing. The boot our own save causes, and any
  deploy or config change on the same day, therefore stop without a save;
- never while pairing is not settled, after a logout, or when the worker only recycles itself.

The dyno cannot tell the daily cycle from a deploy at its SIGTERM; it does not need to: the first stop
of a day with changes saves, whatever its cause, and the boot that follows carries the stamp.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("session")

# The daily cycle comes 24 h (plus up to 216 minutes) after a dyno's start, and that start follows
# the stop save that stamped the snapshot, so one stop save per cycle fits, and never two a day.
STOP_SAVE_EVERY = 24 * 3600

# Heroku's grace period is 30 s; the worker's whole exit must fit gunicorn's graceful_timeout under it.
STOP_SAVE_MIN_SECONDS = 3.0  # less left than this after disconnecting: do not start a save


def why_not(*, restarts_on_write: bool, local_jid: str | None, stored_jid: str | None,
            stored_stamp: int | None, connected_this_boot: bool, wiped: bool, seconds_left: float,
            now: float) -> str | None:
    """None when the stop should save; else the reason it does not (logged as is)."""
    if wiped:
        return "the session was wiped"
    if not local_jid:
        return "no logged-in device"
    if not connected_this_boot:
        return "it never connected since the boot, so nothing changed"
    if stored_jid and stored_jid != local_jid:
        return None  # a new pairing whose save did not happen yet: keep it
    if restarts_on_write and stored_stamp is not None and now - stored_stamp < STOP_SAVE_EVERY:
        hours = (now - stored_stamp) / 3600
        return f"the stored snapshot is from a stop save {hours:.1f} h ago (at most one a day)"
    if seconds_left < STOP_SAVE_MIN_SECONDS:
        return f"only {seconds_left:.1f}s left before Heroku kills the dyno"
    return None


def save_at_stop(session, seconds_left: float, *, recycling: bool = False) -> dict | None:
    """For SnapshotSession.save_at_stop: save within `seconds_left` when why_not() finds no reason not
    to. Never raises; returns the save's outcome or None."""
    now = time.time()
    stored = session._stored_info or {}
    reason = "the worker only recycles itself (the dyno keeps running)" if recycling else why_not(
        restarts_on_write=session.store.kind == "heroku", local_jid=session.device_jid(),
        stored_jid=session._stored_jid, stored_stamp=stored.get("stop_saved_at"),
        connected_this_boot=session.connect_checks > 0, wiped=session.last_wipe is not None,
        seconds_left=seconds_left, now=now)
    if reason:
        log.info("not saving the session at stop: %s", reason)
        return None
    started = time.monotonic()
    try:
        result = session.save(reason="dyno stopping", wait=seconds_left, stop_saved_at=int(now),
                              deadline=started + seconds_left - 1.0)
    except Exception as exc:  # logged by the flight; the stored snapshot stays as it was
        log.warning("the save at stop did not finish: %s", type(exc).__name__)
        return None
    log.info("save at stop: %s in %.1fs", "written" if result.get("changed") else "unchanged, nothing written",
             time.monotonic() - started)
    return result
