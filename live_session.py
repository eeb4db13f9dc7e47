"""The session live in PostgreSQL (DATABASE_URL): neonize writes it there directly.

Nothing to snapshot and nothing to save: the database is durable and has no size ceiling, and no write
restarts the dyno. A WHATSAPP_SESSION snapshot found at boot next to an empty database is imported once
(the way up from the config var without a new QR); a logout deletes the device.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path
from typing import Callable

import snapshot
from clock import iso_now
from errors import error_record, failure_event
from pgsession import PostgresSession
from textsafe import printable

log = logging.getLogger("session")


class LiveDatabaseSession:
    kind = "postgres"

    def __init__(self, pg: PostgresSession, *, snapshot_value: str | None = None) -> None:
        self.pg = pg
        self._snapshot_value = snapshot_value
        self._lock = threading.Lock()
        self.restored_from: str | None = None
        self.restore_error: str | None = None
        self.last_save: dict | None = None
        self.last_save_error: dict | None = None
        self.last_wipe: str | None = None
        self.connect_checks = 0
        # Set by app.create_app: tells the owner (events.py `save_failed`) what failed, with the hint.
        self.notify: Callable[[str, dict], None] | None = None

    def database(self) -> str:
        return self.pg.url

    def has_local_session(self) -> bool:
        return self.device_jid() is not None

    def device_jid(self) -> str | None:
        # PostgreSQL coordinates its clients itself: reading it from this process is safe.
        try:
            return self.pg.device_jid()
        except Exception:
            return None

    def wait_until_device_gone(self, timeout: float = 5.0) -> bool:
        return True  # whatsmeow's delete and our clear() are transactions of one database

    # -- boot -------------------------------------------------------------------------------------
    def restore_on_boot(self) -> str:
        if self.has_local_session():
            self.restored_from = "database"
            log.info("session for %s is live in PostgreSQL", printable(self.device_jid()))
            if self._snapshot_value:
                log.info("WHATSAPP_SESSION is no longer used: `heroku config:unset WHATSAPP_SESSION` frees the room")
            return "database"
        if not self._snapshot_value:
            log.info("no session in PostgreSQL: a QR code will be shown for pairing")
            return "none"
        try:
            jid = self.import_snapshot(self._snapshot_value)
        except Exception as exc:
            self.restore_error = str(exc)
            log.error("could not import WHATSAPP_SESSION into PostgreSQL (%s); a QR code will be shown",
                      printable(exc))
            return "failed"
        self.restored_from = "snapshot"
        log.info(
            "imported the session for %s from WHATSAPP_SESSION into PostgreSQL; it is live there now: "
            "run `heroku config:unset WHATSAPP_SESSION` (one restart) to free the config-var room", printable(jid),
        )
        return "snapshot"

    def import_snapshot(self, text: str) -> str:
        """Unpack a snapshot into a scratch directory and copy its device into the database."""
        # No ensure_schema() here: import_from_sqlite has neonize make the schema itself (each call is
        # a neonize subprocess, and this runs on every boot that imports).
        with tempfile.TemporaryDirectory(prefix="session-import-") as scratch:
            directory = Path(scratch) / "session"
            snapshot.unpack(text, directory)
            return self.pg.import_from_sqlite(str(directory / snapshot.DB_NAME))

    def export_snapshot(self, budget: int) -> str:
        """The database's device as a snapshot (for moving back to a config var or a laptop)."""
        with tempfile.TemporaryDirectory(prefix="session-export-") as scratch:
            directory = Path(scratch) / "session"
            directory.mkdir()
            self.pg.export_to_sqlite(str(directory / snapshot.DB_NAME))
            return snapshot.pack(directory, budget)

    # -- what the connection reports ----------------------------------------------------------------
    def connected(self, still_connected: Callable[[], bool]) -> None:
        """Nothing to save: neonize already wrote the pairing to the database."""
        self.connect_checks += 1
        log.info("connected as %s", printable(self.device_jid()) or "(unknown device)")

    def close(self) -> None:
        pass

    def save_at_stop(self, seconds_left: float, *, recycling: bool = False) -> dict | None:
        return None  # every change is already in the database

    # -- the API's save and the logout's wipe --------------------------------------------------------
    def save(self, *, force: bool = False, reason: str = "requested", wait: float | None = 0.0) -> dict:
        if not self.has_local_session():
            raise snapshot.SnapshotError("there is no logged-in session to save yet (pair first)")
        # Not "message": the API's /api/save-session passes its own `message` next to these keys.
        self.last_save = {
            "at": iso_now(), "reason": reason, "changed": False, "live": True, "restartExpected": False,
            "detail": "the session is live in PostgreSQL: every change is already stored",
        }
        return dict(self.last_save)

    def wipe(self, reason: str) -> None:
        with self._lock:
            self.last_wipe = iso_now()
            try:
                removed = self.pg.clear()
            except Exception as exc:
                self.last_save_error = error_record(exc, f"wipe ({reason})", iso_now(),
                                                    "could not delete the device from PostgreSQL")
                log.error("could not delete the device from PostgreSQL: %s", exc)
                if self.notify is not None:
                    try:
                        self.notify("save_failed", failure_event(exc, f"wipe ({reason})"))
                    except Exception:
                        log.exception("could not report the failure")
                return
            log.info("session wiped (%s)%s", reason, "; device deleted from PostgreSQL" if removed else "")
            if self._snapshot_value:
                # This session cannot unset a config var; left set, the snapshot is imported into the
                # now empty database at the next boot, and the wiped device comes back.
                log.warning(
                    "WHATSAPP_SESSION is still set: the next boot imports it again; run "
                    "`heroku config:unset WHATSAPP_SESSION` to make this wipe stick",
                )

    def status(self) -> dict:
        # One database round trip per status request: describe() already says whether a device is there.
        described = self.pg.describe()
        return {
            "hasLocalSession": bool(described.get("has_device")),
            "hasEnvSession": bool(self._snapshot_value),
            "restoredFrom": self.restored_from,
            "restoreError": self.restore_error,
            "storedSnapshot": None,
            "lastSave": self.last_save,
            "lastSaveError": self.last_save_error,
            "saveInProgress": None,
            "lastWipe": self.last_wipe,
            "store": {"kind": "postgres", "live": True, **described},
        }
