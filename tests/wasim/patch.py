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

# WhatsApp's production root (whatsmeow handshake.go, WACertPubKey).
WHATSAPP_ROOT_KEY = bytes.fromhex("142375574d0a587166aae71ebe516437c4a28b73e3695c6ce1f7f9545da8ee6b")
LIBRARY_NAME = "neonize-linux-amd64.so"


class PatchError(RuntimeError):
    """The installed neonize is not the one this simulator knows how to patch."""


def installed_neonize_dir() -> str:
    spec = importlib.util.find_spec("neonize")
    if spec is None or not spec.submodule_search_locations:
        raise PatchError("neonize is not installed in this interpreter; pip install neonize==0.5.2")
    return list(spec.submodule_search_locations)[0]


def make_patched_neonize(dest_root: str, root_key: bytes, source_dir: str | None = None) -> str:
    """Copy neonize into dest_root/neonize with root_key patched in; returns dest_root."""
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
    with open(lib_path, "wb") as f:
        f.write(data.replace(WHATSAPP_ROOT_KEY, root_key))
    return dest_root
