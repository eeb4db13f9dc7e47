"""Modules a library imports at its top but the bot never uses, executed only when first used.

neonize's client imports, at module level, an HTTP client (`httpx`, for fetching media given by URL:
neonize/utils/iofile.py) and a link-preview scraper whose HTML parser imports a CSS-selector engine
(`linkpreview` -> `bs4` -> `soupsieve`, for `link_preview=True` sends). The bot sends media as bytes it
fetched itself (media_fetch.py) and never asks for a link preview, yet every worker paid for both at
boot: a sixth of the CPU time of `import app` plus neonize (soupsieve compiles its regular expressions
at import). `defer()` puts a stand-in into `sys.modules`, so neonize's `import httpx` binds the stand-in;
the first attribute anyone reads from it imports the real module, and from then on the stand-in passes
every read on. Nothing changes for a caller but when the import happens.

Only for modules imported as a whole (`import httpx`): `from httpx import Client` reads an attribute
at once and so imports the real module then, which is correct, only not deferred. Python's own
`importlib.util.LazyLoader` does not do this on 3.11: the import system reads the module's `__spec__`
when the next `import httpx` finds it in `sys.modules`, and that read executes the module.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types

# What neonize imports at its top for what the bot does not use; deferred wherever neonize loads.
NEONIZE_UNUSED = ("httpx", "soupsieve")

_lock = threading.Lock()  # defer() only: it finds specs, it imports nothing


class _Deferred(types.ModuleType):
    """Stands in for a module until an attribute of it is read; then imports it and reads from it."""

    def __init__(self, name: str, spec):
        super().__init__(name)
        self.__spec__ = spec  # what importlib.util.find_spec(name) answers while the stand-in is in place
        self._deferred_real = None
        # Its own lock, not a shared one: a thread importing the real module while holding a lock that
        # another stand-in's first read also needs could meet Python's per-module import locks.
        self._deferred_lock = threading.Lock()

    def __getattr__(self, attribute: str):  # only called for what the stand-in itself lacks
        return getattr(self._deferred_load(), attribute)

    def _deferred_load(self) -> types.ModuleType:
        with self._deferred_lock:
            if self._deferred_real is None:
                name = self.__name__
                if sys.modules.get(name) is self:
                    del sys.modules[name]  # else the import below would find the stand-in again
                try:
                    self._deferred_real = importlib.import_module(name)
                except BaseException:
                    sys.modules.setdefault(name, self)
                    raise
            return self._deferred_real


def defer(*names: str) -> list[str]:
    """Stand-ins for those of `names` not imported yet and installed; returns the names deferred.
    A name that is already imported, or not installed at all, is left to the normal import."""
    deferred = []
    with _lock:
        for name in names:
            if name in sys.modules:
                continue
            spec = importlib.util.find_spec(name)
            if spec is None:
                continue
            sys.modules[name] = _Deferred(name, spec)
            deferred.append(name)
    return deferred


def is_deferred(name: str) -> bool:
    """Whether `name` is still a stand-in that nobody has read from."""
    return isinstance(sys.modules.get(name), _Deferred)
