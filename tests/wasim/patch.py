"""A copy of the installed neonize package whose Go library trusts the simulator's root key.

whatsmeow checks the server's Noise certificate chain against one 32-byte Curve25519 public key
compiled into the client (handshake.go, WACertPubKey). It appears exactly once in neonize's
shared library, so the test copy gets the simulator's key in its place. neonize loads the
library from its own package directory (_binder.py: Path(__file__).parent), so putting the
copy first on PYTHONPATH is enough. Nothing outside the given directory is touched.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import struct
import threading

# WhatsApp's production root (whatsmeow handshake.go, WACertPubKey).
WHATSAPP_ROOT_KEY = bytes.fromhex("142375574d0a587166aae71ebe516437c4a28b73e3695c6ce1f7f9545da8ee6b")
LIBRARY_NAME = "neonize-linux-amd64.so"
# whatsmeow's keep-alive timing (keepalive.go: KeepAliveResponseDeadline 10 s, KeepAliveIntervalMin
# 20 s, KeepAliveIntervalMax 30 s, KeepAliveMaxFailTime 3 min): four adjacent int64 nanosecond values
# in the library's data section, found exactly once. A test copy may shorten the first three so a
# dead connection shows within seconds; KeepAliveMaxFailTime stays, so whatsmeow's own forced
# reconnect (after 3 minutes) never hides what the bot does.
KEEPALIVE_VARS = struct.pack("<qqqq", 10 * 10**9, 20 * 10**9, 30 * 10**9, 180 * 10**9)


class PatchError(RuntimeError):
    """The installed neonize is not the one this simulator knows how to patch."""


def installed_neonize_dir() -> str:
    spec = importlib.util.find_spec("neonize")
    if spec is None or not spec.submodule_search_locations:
        raise PatchError("neonize is not installed in this interpreter; pip install neonize==0.5.2")
    return list(spec.submodule_search_locations)[0]


def make_patched_neonize(dest_root: str, root_key: bytes, source_dir: str | None = None,
                         keepalive: tuple[float, float, float] | None = None) -> str:
    """Copy neonize into dest_root/neonize with root_key patched in; returns dest_root.

    `keepalive`: (interval min, interval max, response deadline) in seconds for whatsmeow's pings."""
    if len(root_key) != 32:
        raise PatchError("the root key must be 32 bytes")
    source_dir = source_dir or installed_neonize_dir()
    target = os.path.join(dest_root, "neonize")
    shutil.copytree(source_dir, target, ignore=shutil.ignore_patterns("__pycache__"))
    lib_path = os.path.join(target, LIBRARY_NAME)
    with open(lib_path, "rb") as f:
        data = f.read()
    count = data.count(WHATSAPP_ROOT_KEY)
    if count != 1:
        raise PatchError(
            f"expected WhatsApp's root key exactly once in {LIBRARY_NAME}, found {count}; "
            "a different neonize/whatsmeow build needs this patcher re-checked"
        )
    data = data.replace(WHATSAPP_ROOT_KEY, root_key)
    if keepalive is not None:
        if data.count(KEEPALIVE_VARS) != 1:
            raise PatchError(f"whatsmeow's keep-alive timing not found exactly once in {LIBRARY_NAME}")
        interval_min, interval_max, deadline = (int(x * 10**9) for x in keepalive)
        data = data.replace(KEEPALIVE_VARS, struct.pack("<qqqq", deadline, interval_min, interval_max, 180 * 10**9))
    with open(lib_path, "wb") as f:
        f.write(data)
    return dest_root


_made: dict[tuple, str] = {}
_made_lock = threading.Lock()


def shared_patched_neonize(dest_root: str, root_key: bytes, source_dir: str | None = None,
                           keepalive: tuple[float, float, float] | None = None) -> str:
    """make_patched_neonize, once per process for the same key, source and keep-alive timing.

    A copy is 19 MB, and its Python is compiled anew by the first bot that imports it (about half a
    second of CPU, where the run's bytecode cache is keyed by path): the simulators of one test
    process share their root key (noise.process_root) and so the copy. A copy whose directory is gone
    (its first simulator's workdir was removed) is made again in `dest_root`."""
    key = (root_key, os.path.realpath(source_dir or installed_neonize_dir()), keepalive)
    with _made_lock:
        made = _made.get(key)
        if made is None or not os.path.isfile(os.path.join(made, "neonize", LIBRARY_NAME)):
            made = _made[key] = make_patched_neonize(dest_root, root_key, source_dir, keepalive)
        return made
