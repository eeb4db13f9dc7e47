"""Where the connection's neonize client comes from: neonize's NewClient, or a test seam."""

from __future__ import annotations

import importlib
import logging
import shutil
from typing import Callable

import neonize_lib

log = logging.getLogger("whatsapp")


def default_client_factory(database: str):
    lib = neonize_lib.load()
    _say_once_what_ffmpeg_affects(lib.ffmpeg)
    client = lib.NewClient(database)
    # neonize prints each login status code as a bare number on stdout; a log line says what it is.
    client._NewClient__onLoginStatus = lambda uuid, status: log.debug("neonize login status %s", status)
    return client


def _say_once_what_ffmpeg_affects(ffmpeg) -> None:
    """neonize warns on every connect of a new process that media "will fail" without ffmpeg, which
    reads as alarming for a bot that may never send any. Say once what it really affects."""
    if ffmpeg._ffmpeg_checked:
        return
    ffmpeg._ffmpeg_checked = True  # neonize's own check stays quiet from now on
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        log.info(
            "%s not installed: neonize's video, GIF and sticker messages need it (no endpoint of this bot "
            "sends them); text, documents, images, voice notes and locations work without it",
            " and ".join(missing),
        )


def load_client_factory(spec: str | None) -> Callable[[str], object]:
    """`module:callable` from WHATSAPP_CLIENT_FACTORY (a test seam), or neonize's NewClient."""
    if not spec:
        return default_client_factory
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr or "factory")
