"""The session as neonize's SQLite database on local disk, kept across restarts as a snapshot in a store.

The whole policy of such a session lives here: restore on boot, the one save after a pairing, saves
asked through the API, and the wipe after a logout. Every write to a Heroku config var creates a
release and restarts the dyno, so the policy is about *not* saving: a restored session that reconnects
saves nothing (its device is the one already stored), and a save never writes a value equal to the
stored one (the store compares it with what the config var holds, forced or not).

Saves are a single flight under one deadline (snapshot_saving.py).

A snapshot that fails to restore is left in the store untouched: the bot offers a QR code, and only a
successful new pairing (whose save replaces it) or a logout removes it.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import snapshot
from clock import iso_now
from config import PREKEY_CHECK_INTERVAL, SAVE_DEADLINE, SAVE_WAITERS
from prekeywatch import PreKeyWatch
import stopsave
from errors import error_record, failure_event
from stores import SnapshotStore
from snapshot.description import ignored_summary
from snapshot_saving import Flight, SaveInProgress, SingleFlightSaves  # noqa: F401 (api.py catches SaveInProgress here)
from textsafe import printable

log = logging.getLogger("session")

# The directory that holds the snapshot package: the child runs `python -m snapshot.child` from there.
_PROJECT_DIR = Path(snapshot.__file__).resolve().parent.parent


def _restore_failure(exc: BaseException) -> str:
    """Why the stored snapshot could not be read, as one escaped line for the log and the key holders'
    status: the snapshot's own error (it may quote the snapshot's schema), or, for an exception no
    check foresaw, its type and text. Either way the boot goes on to a QR code, never a traceback."""
    if isinstance(exc, snapshot.SnapshotError):
        return printable(exc, 1000)
    return f"unexpected {type(exc).__name__}: {printable(exc, 300)}"


class SnapshotSession(SingleFlightSaves):
    """Joins the session directory (neonize's database), the snapshot format and the store."""

    kind = "snapshot"

    def __init__(self, session_dir: Path, store: SnapshotStore, *, save_delay: float = 5.0,
                 save_deadline: float = SAVE_DEADLINE, prekey_check_interval: float = PREKEY_CHECK_INTERVAL) -> None:
        self.session_dir = Path(session_dir)
        self.store = store
        self.save_delay = save_delay
        self.save_deadline = save_deadline
        self._wipe_lock = threading.Lock()
        self._flight_lock = threading.Lock()
        self._flight: Flight | None = None
        # Requests waiting for the flight hold a request thread each: a bounded number of them may.
        self._waiters = threading.BoundedSemaphore(SAVE_WAITERS)
        self._save_timer: threading.Timer | None = None
        self.restored_from: str | None = None  # "local" / "store" / None
        self.restore_error: str | None = None
        self.last_save: dict | None = None
        self.last_save_error: dict | None = None  # BotError.as_dict() of the last failed save
        self.last_wipe: str | None = None
        self.connect_checks = 0  # how many times the save decision after Connected was taken
        # Set by app.create_app: tells the owner (events.py `save_failed`) what failed, with the hint.
        self.notify: Callable[[str, dict], None] | None = None
        self._stored_jid: str | None = None
        self._stored_info: dict | None = None
        self._local_jid: str | None = None
        self.prekey_watch = PreKeyWatch(self, prekey_check_interval)

    # -- what neonize opens -----------------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.session_dir / snapshot.DB_NAME

    def database(self) -> str:
        """The name handed to neonize's NewClient: the SQLite file of the session."""
        self.session_dir.mkdir(parents=True, exist_ok=True)
        return str(self.db_path)

    def has_local_session(self) -> bool:
        return self.device_jid() is not None

    def device_jid(self) -> str | None:
        """The logged-in device of the session directory, as last read (no disk access: the status
        endpoint asks often). Read at boot, after each connect, and after saves and wipes."""
        return self._local_jid

    def refresh_local(self, timeout: float = 120) -> str | None:
        """Read the device from the database neonize may have open, in a separate process."""
        probed = self._snapshot_child("probe", str(self.session_dir.resolve()), timeout=timeout)
        self._local_jid = json.loads(probed)["jid"]
        return self._local_jid

    def wait_until_device_gone(self, timeout: float = 5.0) -> bool:
        """After a logout whatsmeow deletes the device itself, while it reports the logout; wiping the
        files before that commits makes its delete (and the next database) fail. Bounded wait."""
        deadline = time.monotonic() + timeout
        while self.refresh_local() is not None:
            if time.monotonic() > deadline:
                log.warning("whatsmeow did not delete the logged-out device within %.0fs; wiping anyway", timeout)
                return False
            time.sleep(0.1)
        return True

    def _snapshot_child(self, *args: str, timeout: float = 120) -> str:
        """Run snapshot/child.py in a child process and return its stdout: once neonize has the
        database open, this process reads it only through a child (see snapshot/child.py why)."""
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "snapshot.child", *args], cwd=_PROJECT_DIR,
                capture_output=True, text=True, timeout=max(timeout, 1), stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise snapshot.SnapshotError(f"reading the session took longer than {timeout:.0f}s") from None
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
            raise snapshot.SnapshotError(lines[-1].removeprefix("error: "))
        return proc.stdout

    # -- boot -------------------------------------------------------------------------------------
    def _read_stored_snapshot(self, text: str) -> None:
        """Remember which device the stored snapshot holds, for the save decision and the status."""
        try:
            info = snapshot.inspect(text)
        except Exception as exc:  # noqa: BLE001 - bad data never stops a boot (see _restore_failure)
            self._stored_info = {"valid": False, "error": _restore_failure(exc), "encodedSize": len(text)}
            return
        self._remember_stored(info)

    def stored_prekeys(self) -> tuple[int, int] | None:
        """(highest pre-key id, uploaded pre-keys) of the stored snapshot (after a restore: of the restored
        session, fence included), or None when nothing valid is stored."""
        info = self._stored_info or {}
        if not info.get("valid") or info.get("max_prekey_id") is None:
            return None
        return int(info["max_prekey_id"]), int(info.get("uploaded_prekeys") or 0)

    def _remember_stored(self, info) -> None:
        self._stored_jid = info.device_jid
        self._stored_info = {"valid": True, **info.as_dict()}

    def restore_on_boot(self) -> str:
        """Unpack the stored snapshot when there is no valid local session. Never raises for bad data.

        Runs before neonize opens the database, so it may read it in this process. The stored snapshot
        (it came with the environment: no API call) is decoded once: restored, or only described when
        a local session is there already."""
        self._local_jid = snapshot.device_jid(self.session_dir)
        text = self.store.load()
        if self.has_local_session():
            self.restored_from = "local"
            log.info("local session present for %s; not restoring", printable(self.device_jid()))
            if text:
                self._read_stored_snapshot(text)
            return "local"
        if not text:
            log.info("no stored session: a QR code will be shown for pairing")
            return "none"
        try:
            info = snapshot.unpack(text, self.session_dir)
        except Exception as exc:  # noqa: BLE001 - bad data never stops a boot (see _restore_failure)
            detail = _restore_failure(exc)
            self._stored_info = {"valid": False, "error": detail, "encodedSize": len(text)}
            self.restore_error = detail
            log.error(
                "the stored session could not be restored (%s); it is left untouched in the store, and a QR "
                "code will be shown: a new pairing replaces it",
                detail,
            )
            return "failed"
        self.restored_from = "store"
        self._local_jid = info.device_jid
        self._remember_stored(info)
        # Text from the snapshot (JID, tier, member names) is logged escaped: it must not forge log lines.
        dropped = ignored_summary(info.ignored_members)
        log.info(
            "restored session for %s from %s (tier=%s, %d chars)%s",
            printable(info.device_jid), self.store.key, printable(info.tier, 40), info.encoded_chars,
            f"; not restored from the snapshot: {dropped}" if dropped else "",
        )
        return "store"

    # -- what the connection reports ----------------------------------------------------------------
    def connected(self, still_connected: Callable[[], bool]) -> None:
        """WhatsApp logged in. Decide, off neonize's event thread (reading the device takes a child
        process), whether this is a new pairing; if so save once, `save_delay` seconds later, provided
        the connection is still up then."""
        threading.Thread(target=self._after_connected, args=(still_connected,), name="session-connected",
                         daemon=True).start()

    def _after_connected(self, still_connected: Callable[[], bool]) -> None:
        try:
            local = self.refresh_local()
        except Exception as exc:
            log.error("could not read the session after connecting: %s", exc)
            return
        finally:
            self.connect_checks += 1
        log.info("connected as %s", printable(local) if local else "(unknown device)")
        if not local:
            return
        # The first look installs the use triggers (snapshot/signaluse.py), before the save decision is logged.
        self.prekey_watch.look_once()
        self.prekey_watch.start()
        if local == self._stored_jid:
            log.info("device %s is the stored one: nothing to save", printable(local))
            return
        log.info("new pairing: saving the session in %.0fs, once connected and settled", self.save_delay)
        self._cancel_save_timer()
        timer = threading.Timer(self.save_delay, self._save_after_pairing, args=(still_connected,))
        timer.daemon = True
        self._save_timer = timer
        timer.start()

    def _save_after_pairing(self, still_connected: Callable[[], bool]) -> None:
        if not still_connected():
            log.info("not saving the new pairing: the connection is gone")
            return
        try:
            self.save(reason="new pairing", wait=None)
        except SaveInProgress:
            pass  # the same single flight as an API save: it carries on and is shown in status()
        except Exception:
            pass  # logged and kept in last_save_error by the flight itself

    def _cancel_save_timer(self) -> None:
        if self._save_timer:
            self._save_timer.cancel()

    def close(self) -> None:
        """The worker stops: no save starts any more (one already running finishes or times out)."""
        self._cancel_save_timer()
        self.prekey_watch.close()

    def save_at_stop(self, seconds_left: float, *, recycling: bool = False) -> dict | None:
        """The worker stops (after the connection is closed): stopsave.py decides and saves."""
        return stopsave.save_at_stop(self, seconds_left, recycling=recycling)

    # -- wiping -----------------------------------------------------------------------------------
    def wipe(self, reason: str) -> None:
        """Delete the local session and the stored snapshot (one API call). Only for a real logout."""
        self._cancel_save_timer()
        with self._wipe_lock:
            self._wipe_local()
            self._local_jid = None
            self.last_wipe = iso_now()
            self._stored_jid, self._stored_info = None, None
            try:
                removed = self.store.clear(deadline=time.monotonic() + self.save_deadline)
            except Exception as exc:
                # The local session is gone either way; a stale snapshot left in the store is restored on
                # the next boot, refused by WhatsApp as logged out, and wiped again then.
                self.last_save_error = error_record(exc, f"wipe ({reason})", iso_now(),
                                                    "could not remove the stored session")
                log.error("could not remove the stored session: %s", exc)
                self._report_failure(exc, f"wipe ({reason})")
                return
            log.info("session wiped (%s)%s", reason, "; stored snapshot removed" if removed else "")

    def _report_failure(self, exc: Exception, during: str) -> None:
        if self.notify is None:
            return
        try:
            self.notify("save_failed", failure_event(exc, during))
        except Exception:
            log.exception("could not report the failure")

    def _wipe_local(self) -> None:
        directory = self.session_dir
        if directory.is_symlink():
            directory.unlink()
        elif directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True, exist_ok=True)

    # -- status -----------------------------------------------------------------------------------
    def status(self) -> dict:
        return {
            "hasLocalSession": self.has_local_session(),
            "hasEnvSession": bool(self.store.load()),
            "restoredFrom": self.restored_from,
            "restoreError": self.restore_error,
            "storedSnapshot": self._stored_info,
            "lastSave": self.last_save,
            "lastSaveError": self.last_save_error,
            "saveInProgress": self.save_in_progress(),
            "lastWipe": self.last_wipe,
            "preKeyWatch": self.prekey_watch.status(),
            "store": self.store.describe(),
        }
