"""Customers' files: the keys of every media message kept as it arrives (media_cache.py), and the
download GET /api/media/<id> asks for (media_fetch.py: streamed, decrypted and checked into a temp file
in the session directory).

The download does not go through the WhatsApp connection (whatsmeow's download.go only asks it for the
media hosts, see media_fetch), so a file can be fetched while the connection is down. At most
MAX_PARALLEL downloads run at once: each holds a request thread of the one worker for up to
MEDIA_DOWNLOAD_DEADLINE seconds, and the health check and the sends must always find one free.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import incoming_media
import media_fetch
from config import MEDIA_CACHE_ENTRIES, MEDIA_CACHE_SECONDS, MEDIA_DOWNLOAD_DEADLINE
from media_cache import MediaCache
from textsafe import printable

log = logging.getLogger("whatsapp")

MAX_PARALLEL = 4
TEMP_DIR = "media-tmp"


class Downloads:
    """Mixin of Connection (client.py). Owns `_media`: message id -> MediaRef (media_cache.py). The
    message concern (message.py) hands it every peer's message; no neonize event of its own."""

    def _init_downloads(self, session_dir: Path | str, max_entries: int = MEDIA_CACHE_ENTRIES,
                        max_age: float = MEDIA_CACHE_SECONDS, deadline: float = MEDIA_DOWNLOAD_DEADLINE) -> None:
        self._media: MediaCache[incoming_media.MediaRef] = MediaCache(max_entries, max_age)
        self._media_dir = Path(session_dir) / TEMP_DIR
        self._media_deadline = deadline
        self._media_slots = threading.BoundedSemaphore(MAX_PARALLEL)
        self._media_dir_cleaned = False

    def _remember_media(self, message_id: str, message) -> None:
        """Keep what fetching this message's file needs (nothing for a message without one)."""
        ref = incoming_media.media_ref(message)
        if ref is not None:
            self._media.put(message_id, ref)

    def open_media(self, message_id: str):
        """(an open file holding the checked, decrypted file, its MediaRef). The file is already
        unlinked: it disappears when the handle closes, however the answer ends. Raises MediaNotFound,
        MediaBusy, or a media_fetch.MediaDownloadError."""
        ref = self._media.get(message_id)
        if ref is None:
            raise media_fetch.MediaNotFound(
                "no file for this message id: not a media message received since the bot started, or "
                "no longer kept (MEDIA_CACHE_ENTRIES, MEDIA_CACHE_SECONDS)")
        if not self._media_slots.acquire(blocking=False):
            raise media_fetch.MediaBusy(f"{MAX_PARALLEL} downloads are running; try again in a few seconds")
        try:
            if not self._media_dir_cleaned:
                media_fetch.clean_leftovers(self._media_dir)  # a worker killed mid-download left them
                self._media_dir_cleaned = True
            try:
                path = media_fetch.download_to_file(ref, self._media_dir, deadline=self._media_deadline)
            except media_fetch.MediaDownloadError as exc:
                log.warning("download of the %s in message %s failed: %s", ref.kind, printable(message_id), exc)
                raise
        finally:
            self._media_slots.release()
        try:
            handle = open(path, "rb")
            os.unlink(path)
        except OSError:
            # A logout wiped the session directory while the download ran.
            raise media_fetch.MediaDownloadError("the downloaded file was removed before it could be sent "
                                                 "(the session directory was wiped)") from None
        log.info("serving the %s of message %s (%d bytes, checked)", ref.kind, printable(message_id),
                 os.fstat(handle.fileno()).st_size)
        return handle, ref
