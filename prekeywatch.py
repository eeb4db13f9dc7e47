"""Saves the session when whatsmeow uploaded a new batch of pre-keys: a rare event, so a rare restart.

whatsmeow uploads 812 one-time pre-keys at pairing and a batch of 50 more whenever the server holds fewer
than 5 (prekeys.go `uploadPreKeys`), so after about 800 new peers. A batch exists only in the live
database: after a restart from an older snapshot the server would hand out keys whose private halves
are gone. No event tells of the upload, so a cheap periodic look at the database (a child process,
snapshot/child.py `watch`: one indexed query) counts the uploaded pre-keys above the highest id the
stored snapshot knows; PREKEY_BATCH of them or more means a batch (a retry receipt mints one at a time,
prekeys.go `GenOnePreKey`), and the session is saved once. The save moves that id up, so the next look
finds nothing until the next batch.

The same look keeps the use triggers of snapshot/signaluse.py installed (a restore drops them).
"""

from __future__ import annotations

import json
import logging
import threading

log = logging.getLogger("session")

# whatsmeow prekeys.go WantedPreKeyCount: the size of every batch after the initial upload.
PREKEY_BATCH = 50


class PreKeyWatch:
    """One daemon thread per session: looks now, then every `interval` seconds, until close()."""

    def __init__(self, session, interval: float) -> None:
        self.session = session  # SnapshotSession: _snapshot_child, stored_prekey_id(), save()
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.checks = 0
        self.batch_saves = 0
        self.tracking = False
        self.last: dict | None = None  # the last look: maxPreKeyId, mintedAbove
        self.last_error: str | None = None

    def start(self) -> None:
        """The periodic looks, the first one `interval` from now (the caller made one: look_once)."""
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="prekey-watch", daemon=True)
                self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.look_once()

    def look_once(self) -> None:
        """check(), logging instead of raising: the watcher never dies, the next look tries again."""
        try:
            self.check()
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("pre-key check failed: %s", self.last_error)

    def check(self) -> bool:
        """One look; True when it started a save for a new batch."""
        stored = self.session.stored_prekeys()
        if stored is None:
            return False  # nothing stored yet: the save after pairing carries the initial upload
        above, stored_uploaded = stored
        out = json.loads(self.session._snapshot_child("watch", str(self.session.session_dir.resolve()),
                                                      "--above", str(above), timeout=60))
        self.checks += 1
        if "error" in out:
            raise RuntimeError(out["error"]["message"])
        self.tracking, self.last, self.last_error = bool(out["tracking"]), out, None
        # A batch above the stored ids, or the initial upload marked after the save that followed pairing.
        initial = stored_uploaded == 0 and out["uploaded"] >= PREKEY_BATCH
        if not out["jid"] or (out["mintedAbove"] < PREKEY_BATCH and not initial):
            return False
        log.info("whatsmeow uploaded new pre-keys (%d above id %d): saving the session once",
                 out["mintedAbove"], above)
        self.batch_saves += 1
        try:
            self.session.save(reason="new pre-key batch", wait=None)
        except Exception:
            pass  # logged and kept in last_save_error by the flight; the next look tries again
        return True

    def status(self) -> dict:
        return {"checks": self.checks, "batchSaves": self.batch_saves, "tracking": self.tracking,
                "maxPreKeyId": (self.last or {}).get("maxPreKeyId"), "lastError": self.last_error}
