"""The session's life: restore on boot, save once after a pairing, wipe on logout. Also a small CLI.

Every write to a Heroku config var creates a release and restarts the dyno. So the policy here is
about *not* saving: a restored session that reconnects saves nothing (its device is the one already
stored), and a save that would store the same bytes is skipped. A save happens when the local device
is not the stored one — in practice once, a few seconds after a new pairing — or when asked through
the API.

A snapshot that fails to restore is left in the store untouched: the bot offers a QR code, and only a
successful new pairing (whose save replaces it) or a logout removes it.

CLI (to move a session between Heroku and a laptop):
    python session_manager.py pack DIR [--budget N] [--tier T] > snapshot.txt
    python session_manager.py unpack DIR < snapshot.txt
    python session_manager.py inspect < snapshot.txt
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

import snapshot

log = logging.getLogger("session")

_SNAPSHOT_SCRIPT = Path(snapshot.__file__).resolve()


class SessionManager:
    """Joins the session directory (neonize's database), the snapshot format and the store."""

    def __init__(self, session_dir: Path, store, *, save_delay: float = 5.0) -> None:
        self.session_dir = Path(session_dir)
        self.store = store
        self.save_delay = save_delay
        self._lock = threading.Lock()  # one save or wipe at a time
        self.restored_from: str | None = None  # "local" / "store" / None
        self.restore_error: str | None = None
        self.last_save: dict | None = None
        self.last_save_error: str | None = None
        self.last_wipe: str | None = None
        self._stored_jid: str | None = None
        self._stored_info: dict | None = None
        self._local_jid: str | None = None
        self._read_stored_snapshot()

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

    def refresh_local(self) -> str | None:
        """Read the device from the database neonize may have open, in a separate process."""
        self._local_jid = json.loads(self._snapshot_cli("probe", str(self.session_dir)))["jid"]
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

    def _snapshot_cli(self, *args: str) -> str:
        """Run snapshot.py's CLI in a child process and return its stdout.

        neonize's Go library carries its own SQLite, and Python's sqlite3 is another copy. POSIX locks
        belong to the process, so two SQLite copies in one process cannot see each other's locks, and
        one closing the file drops the other's (sqlite.org/howtocorrupt.html, "multiple copies of SQLite
        linked into the same application"). Once neonize has the database open, this process reads it
        only through a child process, whose locks SQLite coordinates properly.
        """
        proc = subprocess.run(
            [sys.executable, str(_SNAPSHOT_SCRIPT), *args],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )
        if proc.returncode == snapshot.EXIT_TOO_LARGE:
            figures = json.loads(proc.stderr.strip().splitlines()[-1])
            raise snapshot.SnapshotTooLarge(figures["sizes"], figures["budget"])
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
            raise snapshot.SnapshotError(lines[-1].removeprefix("error: "))
        return proc.stdout

    # -- boot -------------------------------------------------------------------------------------
    def _read_stored_snapshot(self) -> None:
        """Remember which device the stored snapshot holds (no API call: the value came with the env)."""
        text = self.store.load()
        self._stored_jid, self._stored_info = None, None
        if not text:
            return
        try:
            info = snapshot.inspect(text)
        except snapshot.SnapshotError as exc:
            self._stored_info = {"valid": False, "error": str(exc), "encodedSize": len(text)}
            return
        self._stored_jid = info.device_jid
        self._stored_info = {"valid": True, **info.as_dict()}

    def restore_on_boot(self) -> str:
        """Unpack the stored snapshot when there is no valid local session. Never raises for bad data.

        Runs before neonize opens the database, so it may read it in this process."""
        self._local_jid = snapshot.device_jid(self.session_dir)
        if self.has_local_session():
            self.restored_from = "local"
            log.info("local session present for %s; not restoring", snapshot.printable(self.device_jid()))
            return "local"
        text = self.store.load()
        if not text:
            log.info("no stored session: a QR code will be shown for pairing")
            return "none"
        try:
            info = snapshot.unpack(text, self.session_dir)
        except snapshot.SnapshotError as exc:
            self.restore_error = str(exc)
            log.error(
                "the stored session could not be restored (%s); it is left untouched in the store, and a QR "
                "code will be shown: a new pairing replaces it",
                snapshot.printable(exc),
            )
            return "failed"
        self.restored_from = "store"
        self._local_jid = info.device_jid
        # Text from the snapshot (JID, tier, member names) is logged escaped: it must not forge log lines.
        log.info(
            "restored session for %s from %s (tier=%s, %d chars)%s",
            snapshot.printable(info.device_jid), self.store.key, snapshot.printable(info.tier),
            info.encoded_chars,
            f"; not restored from the snapshot: {', '.join(info.ignored_members)}" if info.ignored_members else "",
        )
        return "store"

    # -- saving -----------------------------------------------------------------------------------
    def should_save_after_connect(self) -> bool:
        """After a pairing the local device differs from the stored one; after a restore it does not."""
        local = self.refresh_local()
        if not local:
            return False
        if local == self._stored_jid:
            log.info("device %s is the stored one: nothing to save", snapshot.printable(local))
            return False
        return True

    def save(self, *, force: bool = False, reason: str = "requested") -> dict:
        """Pack and store the session. Raises snapshot.SnapshotError or stores.StoreError on failure."""
        with self._lock:
            if not self.refresh_local():
                raise snapshot.SnapshotError("there is no logged-in session to save yet (pair first)")
            try:
                budget = self.store.budget()
                text = self._pack_within(budget)
                # Described before it is stored: inspect reads a scratch copy of the snapshot, and the
                # status must show the stored snapshot as soon as the store holds it.
                info = snapshot.inspect(text)
                result = self.store.save(text, force=force, budget=budget)
            except Exception as exc:
                self.last_save_error = str(exc)
                raise
            self.last_save_error = None
            self._stored_jid = info.device_jid
            self._stored_info = {"valid": True, **info.as_dict()}
            self.last_save = {
                "at": _now(),
                "reason": reason,
                "changed": result.changed,
                "size": len(text),
                "tier": info.tier,
                "budget": budget.ceiling,
                "target": budget.target,
                "restartExpected": result.restart_expected,
            }
            if result.changed:
                log.info("session saved (%s): %d chars, tier=%s", reason, len(text), info.tier)
            else:
                log.info("session unchanged (%s): nothing written", reason)
            return dict(self.last_save)

    def _pack_within(self, budget) -> str:
        """The most complete tier under the target (a quarter of the limit); else under the hard ceiling."""
        try:
            return self._pack(min(budget.target, budget.ceiling))
        except snapshot.SnapshotTooLarge:
            if budget.ceiling <= budget.target:
                raise
        log.warning(
            "the session does not fit the %d-char target; using up to %d of the room the other config vars "
            "leave (the next `heroku config:set` may then fail)", budget.target, budget.ceiling,
        )
        return self._pack(budget.ceiling)

    def _pack(self, budget: int) -> str:
        return self._snapshot_cli("pack", str(self.session_dir), "--budget", str(budget))

    # -- wiping -----------------------------------------------------------------------------------
    def wipe(self, reason: str) -> None:
        """Delete the local session and the stored snapshot (one API call). Only for a real logout."""
        with self._lock:
            self._wipe_local()
            self._local_jid = None
            self.last_wipe = _now()
            self._stored_jid, self._stored_info = None, None
            try:
                removed = self.store.clear()
            except Exception as exc:
                # The local session is gone either way; a stale snapshot left in the store is restored on
                # the next boot, refused by WhatsApp as logged out, and wiped again then.
                self.last_save_error = f"could not remove the stored session: {exc}"
                log.error("could not remove the stored session: %s", exc)
                return
            log.info("session wiped (%s)%s", reason, "; stored snapshot removed" if removed else "")

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
            "storedSnapshot": _public_snapshot_info(self._stored_info),
            "lastSave": self.last_save,
            "lastSaveError": self.last_save_error,
            "lastWipe": self.last_wipe,
            "store": self.store.describe(),
        }


class LiveDatabaseSessionManager(SessionManager):
    """The session lives in PostgreSQL (DATABASE_URL): neonize writes it there directly.

    Nothing to snapshot and nothing to save: the database is durable and has no size ceiling, and no
    write restarts the dyno. A WHATSAPP_SESSION snapshot found at boot next to an empty database is
    imported once (the way up from the config var without a new QR); a logout deletes the device.
    """

    def __init__(self, pg, *, snapshot_value: str | None = None, save_delay: float = 5.0) -> None:
        self.pg = pg
        self._snapshot_value = snapshot_value
        self.save_delay = save_delay
        self._lock = threading.Lock()
        self.restored_from = None
        self.restore_error = None
        self.last_save = None
        self.last_save_error = None
        self.last_wipe = None

    def database(self) -> str:
        return self.pg.url

    def has_local_session(self) -> bool:
        try:
            return self.pg.has_device()
        except Exception:
            return False

    def device_jid(self) -> str | None:
        try:
            return self.pg.device_jid()
        except Exception:
            return None

    def refresh_local(self) -> str | None:
        # PostgreSQL coordinates its clients itself: reading it from this process is safe.
        return self.device_jid()

    def restore_on_boot(self) -> str:
        if self.has_local_session():
            self.restored_from = "database"
            log.info("session for %s is live in PostgreSQL", snapshot.printable(self.device_jid()))
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
                      snapshot.printable(exc))
            return "failed"
        self.restored_from = "snapshot"
        log.info(
            "imported the session for %s from WHATSAPP_SESSION into PostgreSQL; it is live there now: "
            "run `heroku config:unset WHATSAPP_SESSION` (one restart) to free the config-var room",
            snapshot.printable(jid),
        )
        return "snapshot"

    def import_snapshot(self, text: str) -> str:
        """Unpack a snapshot into a scratch directory and copy its device into the database."""
        import tempfile

        # No ensure_schema() here: import_from_sqlite has neonize make the schema itself (each call is
        # a neonize subprocess, and this runs on every boot that imports).
        with tempfile.TemporaryDirectory(prefix="session-import-") as scratch:
            directory = Path(scratch) / "session"
            snapshot.unpack(text, directory)
            return self.pg.import_from_sqlite(str(directory / snapshot.DB_NAME))

    def export_snapshot(self, budget: int) -> str:
        """The database's device as a snapshot (for moving back to a config var or a laptop)."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="session-export-") as scratch:
            directory = Path(scratch) / "session"
            directory.mkdir()
            self.pg.export_to_sqlite(str(directory / snapshot.DB_NAME))
            return snapshot.pack(directory, budget)

    def should_save_after_connect(self) -> bool:
        return False

    def save(self, *, force: bool = False, reason: str = "requested") -> dict:
        if not self.has_local_session():
            raise snapshot.SnapshotError("there is no logged-in session to save yet (pair first)")
        # Not "message": app.py's /api/save-session passes its own `message` next to these keys.
        self.last_save = {
            "at": _now(), "reason": reason, "changed": False, "live": True, "restartExpected": False,
            "detail": "the session is live in PostgreSQL: every change is already stored",
        }
        return dict(self.last_save)

    def wipe(self, reason: str) -> None:
        with self._lock:
            self.last_wipe = _now()
            try:
                removed = self.pg.clear()
            except Exception as exc:
                self.last_save_error = f"could not delete the device from PostgreSQL: {exc}"
                log.error("could not delete the device from PostgreSQL: %s", exc)
                return
            log.info("session wiped (%s)%s", reason, "; device deleted from PostgreSQL" if removed else "")
            if self._snapshot_value:
                # This manager cannot unset a config var; left set, the snapshot is imported into the
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
            "lastWipe": self.last_wipe,
            "store": {"kind": "postgres", "live": True, **_without_device(described)},
        }


def _without_device(info: dict) -> dict:
    """The phone number and the profile name are shown to key holders only."""
    return {k: v for k, v in info.items() if "jid" not in k.lower() and k != "push_name"}


def _public_snapshot_info(info: dict | None) -> dict | None:
    """Sizes and tier only: the device's JID (a phone number) and LID are shown to key holders only."""
    if not info:
        return None
    return {k: v for k, v in info.items() if not any(part in k.lower() for part in ("jid", "lid"))}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def build_manager(cfg) -> SessionManager:
    """The session manager for the configured store (config.Config)."""
    if cfg.session_store == "postgres":
        from pgsession import PostgresSession

        return LiveDatabaseSessionManager(
            PostgresSession(cfg.database_url), snapshot_value=cfg.session_value, save_delay=cfg.session_save_delay
        )
    import stores

    return SessionManager(cfg.session_dir, stores.make_store(cfg), save_delay=cfg.session_save_delay)


def _budget_option(args: list[str], default: int = 16384) -> int:
    """`--budget N` of pg-export: the most characters the snapshot may have."""
    if "--budget" not in args:
        return default
    position = args.index("--budget") + 1
    text = args[position] if position < len(args) else ""
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"--budget needs a positive number of characters, got {text or 'nothing'!r}")
    return int(text)


def main(argv: list[str]) -> int:
    """Snapshot commands (see snapshot.main), plus moving a session in and out of PostgreSQL."""
    if argv and argv[0] in ("pg-export", "pg-import"):
        import os

        from pgsession import PostgresSession, PostgresSessionError

        url = os.environ.get("DATABASE_URL")
        if not url:
            print("error: set DATABASE_URL (heroku config:get DATABASE_URL)", file=sys.stderr)
            return 1
        try:
            # Inside the try: a malformed DATABASE_URL is a one-line error with a hint, not a traceback.
            manager = LiveDatabaseSessionManager(PostgresSession(url))
            if argv[0] == "pg-export":
                budget = _budget_option(argv[1:])
                sys.stdout.write(manager.export_snapshot(budget) + "\n")
            else:
                jid = manager.import_snapshot(sys.stdin.buffer)  # streamed, as snapshot.main does
                print(f"imported {snapshot.printable(jid)} into PostgreSQL", file=sys.stderr)
        except (PostgresSessionError, snapshot.SnapshotError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    return snapshot.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
