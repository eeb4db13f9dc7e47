"""Folding a plain snapshot's -wal into its database, in Python, as SQLite's recovery would.

https://sqlite.org/fileformat2.html#walformat. SQLite never sees the snapshot's -wal: its committed
frames are written into the scratch database here, and the database is then marked as a rollback-journal
database, so it can be opened immutable with nothing beside it. Both files are untrusted: every size
read from them is checked before it is used.
"""

from __future__ import annotations

import struct

from snapshot.format import DB_NAME, MAX_UNCOMPRESSED_BYTES, InvalidSnapshot

_WAL_MAGICS = (0x377F0682, 0x377F0683)  # the low bit says the checksums are big-endian


def valid_page_size(size: int) -> bool:
    """What SQLite accepts as a page size: a power of two from 512 to 65536."""
    return 512 <= size <= 65536 and size & (size - 1) == 0


def db_page_size(db_path: str) -> int:
    """The page size in the database header (bytes 16-17; 1 means 65536). Anything but a power of two
    from 512 to 65536 is refused: SQLite would refuse the file too, and the WAL checksums below walk
    the page in 8-byte steps (a page of 12 or 3 bytes would not even split into words)."""
    with open(db_path, "rb") as fh:
        header = fh.read(100)
    if len(header) < 100:
        raise InvalidSnapshot(f"{DB_NAME} in the snapshot is cut short (no complete SQLite header)")
    size = int.from_bytes(header[16:18], "big")
    size = 65536 if size == 1 else size
    if not valid_page_size(size):
        raise InvalidSnapshot(
            f"{DB_NAME} in the snapshot has a page size of {size} bytes; SQLite's is a power of two "
            "from 512 to 65536 (a damaged or forged database)"
        )
    return size


def _wal_checksum(data: bytes, s0: int, s1: int, big_endian: bool) -> tuple:
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def merge_wal(db_path: str, wal_path: str):
    """Apply the committed frames of a WAL to the database file, as SQLite's recovery would: frames
    are read while their salts and cumulative checksums hold, up to the last commit frame. A WAL that
    SQLite would ignore (bad header, other page size) is ignored. Sizes are bounded by the snapshot
    cap, so a hostile WAL cannot make a huge (sparse) file; it can only change the database's own
    pages, which the snapshot could do directly anyway."""
    page_size = db_page_size(db_path)
    with open(wal_path, "rb") as wal, open(db_path, "r+b") as db:
        header = wal.read(32)
        if len(header) < 32:
            return  # empty: checkpointed already
        magic, _version, wal_page_size, _seq, salt1, salt2, ck1, ck2 = struct.unpack(">8I", header)
        big = bool(magic & 1)
        if magic not in _WAL_MAGICS or wal_page_size != page_size:
            return
        checksum = _wal_checksum(header[:24], 0, 0, big)
        if checksum != (ck1, ck2):
            return
        committed, pending, pages = [], [], None
        while True:
            frame_header = wal.read(24)
            page = wal.read(page_size)
            if len(frame_header) < 24 or len(page) < page_size:
                break
            pgno, commit, frame_salt1, frame_salt2, fc1, fc2 = struct.unpack(">6I", frame_header)
            if (frame_salt1, frame_salt2) != (salt1, salt2) or pgno == 0:
                break
            checksum = _wal_checksum(frame_header[:8] + page, *checksum, big)
            if checksum != (fc1, fc2):
                break
            pending.append((pgno, wal.tell() - page_size))
            if commit:
                if commit * page_size > MAX_UNCOMPRESSED_BYTES:
                    raise InvalidSnapshot(
                        f"the snapshot's {DB_NAME}-wal claims a database over "
                        f"{MAX_UNCOMPRESSED_BYTES // 2**20} MiB"
                    )
                committed += pending
                pending, pages = [], commit
        if pages is None:
            return
        for pgno, offset in committed:
            if pgno <= pages:  # pages past the final size are cut off by the commit anyway
                wal.seek(offset)
                db.seek((pgno - 1) * page_size)
                db.write(wal.read(page_size))
        db.truncate(pages * page_size)


def leave_wal_mode(db_path: str):
    """Mark the scratch database as a rollback-journal database (header bytes 18-19: 2 -> 1), what
    `PRAGMA journal_mode = DELETE` does once the WAL is folded in: it is opened immutable, without any
    -wal beside it."""
    with open(db_path, "r+b") as fh:
        fh.seek(18)
        if fh.read(2) == b"\x02\x02":
            fh.seek(18)
            fh.write(b"\x01\x01")
