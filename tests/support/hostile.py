"""Hostile and broken WHATSAPP_SESSION values, as an attacker or a bad copy-paste would produce them."""

from __future__ import annotations

import base64
import gzip
import io
import sqlite3
import tarfile
import tempfile
from pathlib import Path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _targz(members) -> bytes:
    """members: (TarInfo, bytes | None) pairs."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(raw.getvalue(), mtime=0)


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _sqlite_without_device() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "neonize.db"
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE whatsmeow_device (jid TEXT PRIMARY KEY)")
        return path.read_bytes()


def hostile_values(good_snapshot: str) -> dict[str, str]:
    """name -> value. `good_snapshot` (a valid one) is truncated for the broken-gzip case."""
    symlink = tarfile.TarInfo("neonize.db")
    symlink.type = tarfile.SYMTYPE
    symlink.linkname = "/etc/passwd"
    hardlink = tarfile.TarInfo("neonize.db")
    hardlink.type = tarfile.LNKTYPE
    hardlink.linkname = "../../outside"
    fifo = tarfile.TarInfo("neonize.db")
    fifo.type = tarfile.FIFOTYPE
    # 80 MiB of zeros in ~80 KB of gzip: still small enough to pass through an environment variable
    # (Linux caps one at 128 KiB), past any session's size once inflated.
    bomb_raw = io.BytesIO()
    with tarfile.open(fileobj=bomb_raw, mode="w") as tar:
        zeros = b"\0" * (80 * 1024 * 1024)
        info = tarfile.TarInfo("neonize.db")
        info.size = len(zeros)
        tar.addfile(info, io.BytesIO(zeros))
    bomb = gzip.compress(bomb_raw.getvalue(), compresslevel=9, mtime=0)
    return {
        "invalid base64": "this is not base64 at all!!! ***",
        "truncated gzip": good_snapshot[: len(good_snapshot) // 2],
        "not gzip": _b64(b"PK\x03\x04 a zip file, not a tar.gz" * 10),
        "path traversal": _b64(_targz([_file("../../escaped.db", b"SQLite format 3\0" + b"x" * 100)])),
        "absolute path": _b64(_targz([_file("/tmp/absolute-escape.db", b"x")])),
        "symlink": _b64(_targz([(symlink, None)])),
        "hard link": _b64(_targz([(hardlink, None)])),
        "fifo": _b64(_targz([(fifo, None)])),
        "gzip bomb": _b64(bomb),
        "not sqlite": _b64(_targz([_file("neonize.db", b"definitely not a database" * 40)])),
        "no device": _b64(_targz([_file("neonize.db", _sqlite_without_device())])),
        "empty tar": _b64(_targz([])),
    }
