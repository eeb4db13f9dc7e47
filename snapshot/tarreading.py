"""The members of a snapshot's tar stream: which are kept (the database and its -wal, streamed into a
private scratch directory), which are dropped, and the rules every member must follow (no path leaving
the session directory, no duplicates, a bounded count and size). `tarfile` only ever sees headers that
tarheaders.CheckedTarStream checked first."""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import tarfile

from snapshot.format import DB_NAME, MAX_MEMBERS, MAX_UNCOMPRESSED_BYTES, InvalidSnapshot, SnapshotError
from snapshot.tarheaders import CheckedTarStream
from textsafe import printable

# Scratch names of the two members that are read. Neither ends in -journal/-wal/-shm of the other,
# and the database is only ever opened immutable: SQLite never looks for a file beside it.
SCRATCH_DB = "snapshot-database"
SCRATCH_WAL = "snapshot-wal-frames"


@dataclasses.dataclass
class Members:
    found: dict  # DB_NAME / DB_NAME-wal -> its scratch path
    ignored: list  # printable names of the members that are not restored
    db_mtime: int
    nested_db: str | None  # a neonize.db one level down: the hint for a tar made one level up


def member_path(name: str) -> str:
    """The member's normalized relative path; raises on absolute paths and `..`."""
    if name.startswith("/") or name.startswith("\\"):
        raise InvalidSnapshot(f"absolute path in the snapshot: {printable(name, 100)!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidSnapshot(f"path leaving the session directory in the snapshot: {printable(name, 100)!r}")
    return "/".join(parts)


def read_members(stream, scratch: str) -> Members:
    """Read the tar stream `stream` (the decompressed bytes), keeping the database and its -wal in
    `scratch`. The caller reads `stream` to its end afterwards (gzip's CRC and length)."""
    members = Members(found={}, ignored=[], db_mtime=0, nested_db=None)
    seen: set = set()
    count = declared = 0
    checked = CheckedTarStream(io.BufferedReader(stream, 65536))
    try:
        with tarfile.open(fileobj=checked, mode="r|") as tar:
            for member in tar:
                count += 1
                if count > MAX_MEMBERS:
                    raise InvalidSnapshot(f"the snapshot has more than {MAX_MEMBERS} entries")
                path = member_path(member.name)
                # Links, devices and every type but files and directories were refused in the raw
                # header already (tarheaders); these checks stay as a second line.
                if member.issym() or member.islnk():
                    raise InvalidSnapshot(f"links are not allowed in a snapshot: {printable(member.name, 100)!r}")
                if member.isdev():  # character/block devices and FIFOs
                    raise InvalidSnapshot(
                        f"device files and FIFOs are not allowed in a snapshot: {printable(member.name, 100)!r}"
                    )
                if member.isdir():
                    continue
                if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                    raise InvalidSnapshot(f"unsupported entry type in the snapshot: {printable(member.name, 100)!r}")
                declared += member.size
                if declared > MAX_UNCOMPRESSED_BYTES:
                    raise InvalidSnapshot(
                        f"the snapshot's files add up to more than {MAX_UNCOMPRESSED_BYTES // 2**20} MiB "
                        "(a decompression bomb, or not a session)"
                    )
                if path in seen:
                    raise InvalidSnapshot(f"the snapshot holds {printable(path, 100)!r} twice")
                seen.add(path)
                target = {DB_NAME: SCRATCH_DB, DB_NAME + "-wal": SCRATCH_WAL}.get(path)
                if target:
                    members.found[path] = os.path.join(scratch, target)
                    stream_to_private(tar.extractfile(member), members.found[path])
                    if path == DB_NAME:
                        members.db_mtime = int(member.mtime or 0)
                else:
                    members.ignored.append(printable(path, 100))
                    if path.endswith("/" + DB_NAME):
                        members.nested_db = path
    except SnapshotError:
        raise
    except (tarfile.TarError, EOFError, ValueError, UnicodeError, OverflowError) as exc:
        raise InvalidSnapshot(f"the snapshot is not a valid tar archive ({printable(exc, 300)})") from None
    return members


def stream_to_private(source, path: str):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        if source is not None:
            shutil.copyfileobj(source, fh, 65536)
