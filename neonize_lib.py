"""The one module that imports neonize's runtime: its client, events, enums, JID helpers and the
Message protos. Everything else asks `neonize_lib.load()` for them and never imports neonize itself.

Why one place: importing neonize loads a Go library and a few hundred modules that import each other.
Two threads importing parts of it at once (a request building a Message while the connection thread
creates the client) can meet in Python's per-module import locks: one of them gets a
`_frozen_importlib._DeadlockError` or a half-initialised module, and in the connection thread that
used to mean no WhatsApp connection until the next restart. So the worker loads everything here once,
in its main thread, before it accepts a request (`Connection.start`, from gunicorn's
post_worker_init), and a lock serialises any later first load.

The snapshot code's child processes (neonize_schema.py) import neonize's migrations on their own:
they run in processes of their own, with no request threads.

Two modules neonize imports at its top for features the bot does not use (fetching media by URL, link
previews) are stand-ins until read (deferred_imports.py): about a sixth of the CPU time of this load
with `import app`.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import deferred_imports

_lock = threading.Lock()
_loaded: SimpleNamespace | None = None


def load() -> SimpleNamespace:
    """neonize's parts the bot uses, imported once: `.NewClient`, `.events` (the event classes),
    `.MediaType`, `.build_jid`, `.ffmpeg`, `.waE2E` (the Message protos module), and the enums of the
    chat actions: `.ReceiptType`, `.ChatPresence`, `.ChatPresenceMedia`, `.Presence`."""
    global _loaded
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is None:
            deferred_imports.defer(*deferred_imports.NEONIZE_UNUSED)
            from neonize import events
            from neonize.client import NewClient
            from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as waE2E
            from neonize.utils import ffmpeg
            from neonize.utils.enum import ChatPresence, ChatPresenceMedia, MediaType, Presence, ReceiptType
            from neonize.utils.jid import build_jid

            _loaded = SimpleNamespace(NewClient=NewClient, events=events, MediaType=MediaType,
                                      build_jid=build_jid, ffmpeg=ffmpeg, waE2E=waE2E, ReceiptType=ReceiptType,
                                      ChatPresence=ChatPresence, ChatPresenceMedia=ChatPresenceMedia,
                                      Presence=Presence)
    return _loaded


def loaded() -> bool:
    return _loaded is not None
