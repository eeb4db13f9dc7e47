"""Hostile and broken WHATSAPP_SESSION values, as an attacker or a bad copy-paste would produce them."""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import io
import os
import sqlite3
import struct
import tarfile
import tempfile
import zlib
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


@functools.lru_cache(maxsize=1)
def _gzip_bomb() -> bytes:
    """80 MiB of zeros in ~80 KB of gzip: still small enough to pass through an environment variable
    (Linux caps one at 128 KiB), past any session's size once inflated. Made once per process: it is
    0.36 s of CPU, and test_cycle.py asks for hostile_values() at collection and in each of its cases."""
    bomb_raw = io.BytesIO()
    with tarfile.open(fileobj=bomb_raw, mode="w") as tar:
        zeros = b"\0" * (80 * 1024 * 1024)
        info = tarfile.TarInfo("neonize.db")
        info.size = len(zeros)
        tar.addfile(info, io.BytesIO(zeros))
    return gzip.compress(bomb_raw.getvalue(), compresslevel=9, mtime=0)


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
    return {
        "invalid base64": "this is not base64 at all!!! ***",
        "truncated gzip": good_snapshot[: len(good_snapshot) // 2],
        "not gzip": _b64(b"PK\x03\x04 a zip file, not a tar.gz" * 10),
        "path traversal": _b64(_targz([_file("../../escaped.db", b"SQLite format 3\0" + b"x" * 100)])),
        "absolute path": _b64(_targz([_file("/tmp/absolute-escape.db", b"x")])),
        "symlink": _b64(_targz([(symlink, None)])),
        "hard link": _b64(_targz([(hardlink, None)])),
        "fifo": _b64(_targz([(fifo, None)])),
        "gzip bomb": _b64(_gzip_bomb()),
        "not sqlite": _b64(_targz([_file("neonize.db", b"definitely not a database" * 40)])),
        "no device": _b64(_targz([_file("neonize.db", _sqlite_without_device())])),
        "empty tar": _b64(_targz([])),
    }


# -- raw tar headers that Python's tarfile mishandles (issue 21, section 2) ------------------------
# Each is built as a stream (header blocks and data pieces compressed as they are made), so a 100 MB
# long name costs the test a few MB, not 100.

_BLOCK = 512


def _header(name: str, kind: bytes, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    return info.tobuf(tarfile.USTAR_FORMAT) if kind != tarfile.GNUTYPE_LONGNAME else info.tobuf(tarfile.GNU_FORMAT)


def _padding(size: int) -> bytes:
    return bytes(-size % _BLOCK)


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length += 1
    return str(length).encode() + body


def _pax_block(records: bytes) -> list[bytes]:
    return [_header("././@PaxHeader", tarfile.XHDTYPE, len(records)), records, _padding(len(records))]


def _regular(name: str, data: bytes) -> list[bytes]:
    return [_header(name, tarfile.REGTYPE, len(data)), data, _padding(len(data))]


def _streamed_targz(pieces) -> str:
    """Base64 of gzip of the concatenated `pieces` (an iterable of bytes), compressed as they come."""
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    out = [comp.compress(piece) for piece in pieces]
    out.append(comp.compress(bytes(2 * _BLOCK)) + comp.flush())
    return base64.b64encode(b"".join(out)).decode()


def _repeat(piece: bytes, total: int, step: int = 1 << 20):
    """`total` bytes of `piece` repeated, a MiB at a time."""
    chunk = piece * (step // len(piece))
    left = total
    while left > 0:
        yield chunk[:min(left, len(chunk))]
        left -= len(chunk)


def _gnu_sparse_10_map():
    # pax GNU.sparse.major=1/minor=0 makes tarfile read the member's data as a sparse map of
    # "8000000" entries; the data is "8000000\n" then 16,000,000 lines of "0".
    records = b"".join(_pax_record(k, v) for k, v in (
        ("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0"),
        ("GNU.sparse.name", "neonize.db"), ("GNU.sparse.realsize", "4096")))
    data_size = len(b"8000000\n") + 2 * 16_000_000
    yield from _pax_block(records)
    yield _header("GNUSparseFile.0/neonize.db", tarfile.REGTYPE, data_size)
    yield b"8000000\n"
    yield from _repeat(b"0\n", 2 * 16_000_000)
    yield _padding(data_size)


def _digits_pax(size: int):
    yield _header("././@PaxHeader", tarfile.XHDTYPE, size)
    yield from _repeat(b"1", size)
    yield _padding(size)
    yield from _regular("neonize.db", b"x")


def _long_names(count: int):
    for i in range(count):
        name = (f"{i:04d}" + "a" * 200).encode() + b"\0"
        yield _header("././@LongLink", tarfile.GNUTYPE_LONGNAME, len(name))
        yield name + _padding(len(name))
    yield from _regular("neonize.db", b"x")


def _pax_headers(count: int):
    for i in range(count):
        yield from _pax_block(_pax_record("path", f"{i:04d}-neonize.db"))
    yield from _regular("neonize.db", b"x")


def _huge_long_name(size: int):
    yield _header("././@LongLink", tarfile.GNUTYPE_LONGNAME, size)
    yield from _repeat(b"a", size)
    yield _padding(size)
    yield from _regular("neonize.db", b"x")


def _huge_pax_record(size: int):
    prefix = f"{size} path=".encode()
    yield _header("././@PaxHeader", tarfile.XHDTYPE, size)
    yield prefix
    yield from _repeat(b"a", size - len(prefix) - 1)
    yield b"\n" + _padding(size)
    yield from _regular("neonize.db", b"x")


# name -> a function making the snapshot text (some take a second or two: made on demand).
TAR_HEADER_ATTACKS = {
    "GNU sparse 1.0 map": lambda: _streamed_targz(_gnu_sparse_10_map()),
    "1 MiB digits pax header": lambda: _streamed_targz(_digits_pax(1 << 20)),
    "400 GNU long names": lambda: _streamed_targz(_long_names(400)),
    "400 pax headers": lambda: _streamed_targz(_pax_headers(400)),
    "100 MB GNU long name": lambda: _streamed_targz(_huge_long_name(100 * 1000 * 1000)),
    "100 MB pax record": lambda: _streamed_targz(_huge_pax_record(100 * 1000 * 1000)),
}


# -- databases whose schema or values are hostile (issue 21, section 3) ---------------------------


def changed_copy(source_db: str, statements) -> bytes:
    """The bytes of a copy of `source_db` after `statements` (run with writable_schema on)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "neonize.db"
        path.write_bytes(Path(source_db).read_bytes())
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA writable_schema = ON")
            for statement in statements:
                conn.execute(statement)
        finally:
            conn.close()
        return path.read_bytes()


def snapshot_of(members: dict[str, bytes]) -> str:
    """A plain snapshot (base64 of a tar.gz) holding `members` (name -> bytes)."""
    return _b64(_targz([_file(name, data) for name, data in members.items()]))


_TERMINAL = "char(27) || ']0;pwned' || char(7) || char(27) || '[2J' || char(10) || 'INFO fake line'"

SCHEMA_ATTACKS = {
    # A table row whose name is the byte 0xFB (not UTF-8) and whose SQL does not parse.
    "non-UTF-8 name, unparsable SQL": [
        "UPDATE sqlite_master SET name = X'FB', sql = 'CREATE TABLE (((' WHERE name = 'whatsmeow_contacts'"],
    # sqlite_master.sql stored as a BLOB: SQLite still reads the schema from it.
    "schema SQL as a BLOB": [
        "UPDATE sqlite_master SET sql = CAST(sql AS BLOB) WHERE name = 'whatsmeow_contacts'"],
    # SQL carrying terminal escapes and a newline: SQLite quotes it in its error message.
    "schema SQL with terminal escapes": [
        f"UPDATE sqlite_master SET sql = 'CREATE TABLE whatsmeow_contacts (' || {_TERMINAL} "
        "WHERE name = 'whatsmeow_contacts'"],
    # A virtual table under a whatsmeow name, its SQL spelled so a text prefix check misses it (SQLite
    # stores "CREATE VIRTUAL" normalized; the two spaces are written into sqlite_master afterwards).
    "CREATE  VIRTUAL (two spaces)": [
        "DROP TABLE whatsmeow_contacts",
        "CREATE VIRTUAL TABLE whatsmeow_contacts USING fts5(our_jid, their_jid, first_name, full_name,"
        " push_name, business_name, redacted_phone)",
        "INSERT INTO whatsmeow_contacts (our_jid, their_jid, push_name) VALUES ('a', 'b', 'from a virtual table')",
        "UPDATE sqlite_master SET sql = replace(sql, 'CREATE VIRTUAL', 'CREATE  VIRTUAL')"
        " WHERE name = 'whatsmeow_contacts'"],
    # 40 MB values in the device row (compressible: the snapshot stays a few hundred KB).
    "40 MB JID": ["UPDATE whatsmeow_device SET jid = jid || printf('%.*c', 40000000, 'x')"],
    "40 MB adv_details": ["UPDATE whatsmeow_device SET adv_details = zeroblob(40000000)"],
}


def schema_attack(name: str, source_db: str) -> str:
    return snapshot_of({"neonize.db": changed_copy(source_db, SCHEMA_ATTACKS[name])})


def _wal_header_checksum(header: bytes) -> tuple[int, int]:
    s0 = s1 = 0
    words = struct.unpack("<6I", header[:24])
    for i in range(0, 6, 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def odd_page_size(source_db: str, page_size: int) -> str:
    """The database and a -wal both claiming `page_size` (12 or 3: not a power of two from 512 to
    65536), the WAL's header checksum valid, then one frame with the matching salts."""
    db = bytearray(Path(source_db).read_bytes())
    db[16:18] = page_size.to_bytes(2, "big")
    salts = (0x11111111, 0x22222222)
    head = struct.pack(">6I", 0x377F0682, 3007000, page_size, 0, *salts)
    header = head + struct.pack(">2I", *_wal_header_checksum(head))
    frame = struct.pack(">6I", 1, 1, *salts, 0, 0) + b"\x01" * page_size
    return snapshot_of({"neonize.db": bytes(db), "neonize.db-wal": header + frame})


def _rechecksum(header: bytes) -> bytes:
    """`header` with its checksum field recomputed (after a field was changed by hand)."""
    blank = header[:148] + b" " * 8 + header[156:]
    return header[:148] + b"%06o\0 " % sum(blank) + header[156:]


def _raw(*pieces) -> str:
    """Snapshot text of a tar stream made of `pieces` (raw blocks), with a proper end."""
    return _streamed_targz(pieces)


def _typed(kind: bytes, name: str = "neonize.db", data: bytes = b"") -> list[bytes]:
    return [_header(name, kind, len(data)), data, _padding(len(data))]


def _pax_then_file(records: bytes, padding: bytes | None = None) -> list[bytes]:
    pad = _padding(len(records)) if padding is None else padding
    return [_header("././@PaxHeader", tarfile.XHDTYPE, len(records)), records, pad, *_regular("neonize.db", b"x")]


def _directory_with_data() -> list[bytes]:
    # tarfile reads no data after a directory header: the "data" block is parsed as the next header.
    smuggled = _header("././@LongLink", tarfile.GNUTYPE_LONGNAME, 10)
    return [_rechecksum(_header("dir/", tarfile.DIRTYPE, 0)[:124] + b"%011o\0" % _BLOCK
                        + _header("dir/", tarfile.DIRTYPE, 0)[136:]), smuggled, bytes(_BLOCK)]


def _bad_checksum() -> list[bytes]:
    header = bytearray(_header("neonize.db", tarfile.REGTYPE, 1))
    header[148:156] = b"0000000\0"
    return [bytes(header), b"x" + _padding(1)]


def _base256_size() -> list[bytes]:
    header = _header("neonize.db", tarfile.REGTYPE, 1)
    return [_rechecksum(header[:124] + b"\x80" + bytes(10) + b"\x01" + header[136:]), b"x" + _padding(1)]


_SPARSE_IN_PADDING = _pax_record("path", "neonize.db")
# name -> (snapshot text maker, words the error must hold)
TAR_HEADER_CASES = {
    "global pax header": (lambda: _raw(*_typed(tarfile.XGLTYPE, "././@GlobalHead", _pax_record("comment", "x")),
                                       *_regular("neonize.db", b"x")), "global pax header"),
    "old GNU sparse file": (lambda: _raw(*_typed(tarfile.GNUTYPE_SPARSE)), "sparse"),
    "contiguous file": (lambda: _raw(*_typed(tarfile.CONTTYPE)), "contiguous"),
    "GNU long link name": (lambda: _raw(*_typed(tarfile.GNUTYPE_LONGLINK, "././@LongLink", b"x" * 200)), "long link"),
    "unknown entry type": (lambda: _raw(*_typed(b"Q")), "unsupported entry type"),
    "bad header checksum": (lambda: _raw(*_bad_checksum()), "bad header checksum"),
    "base-256 size": (lambda: _raw(*_base256_size()), "invalid size"),
    "directory carrying data": (lambda: _raw(*_directory_with_data()), "carries data"),
    "pax size key": (lambda: _raw(*_pax_then_file(_pax_record("size", "1"))), "'size' is not allowed"),
    "pax hdrcharset key": (lambda: _raw(*_pax_then_file(_pax_record("hdrcharset", "BINARY"))), "'hdrcharset'"),
    "pax sparse key hidden in the padding": (
        lambda: _raw(*_pax_then_file(_SPARSE_IN_PADDING, padding=(_pax_record("GNU.sparse.major", "1")
                     + _pax_record("GNU.sparse.minor", "0")).ljust(-len(_SPARSE_IN_PADDING) % _BLOCK, b"\0"))),
        "GNU.sparse.major"),
    "malformed pax record": (lambda: _raw(*_pax_then_file(b"99 path=neonize.db\n")), "malformed"),
    "pax header at the end": (lambda: _raw(*_pax_block(_pax_record("path", "neonize.db"))), "right after a pax header"),
}


def tree_state(path) -> dict:
    """Every entry under `path` with a content hash for files: equal states mean untouched (what a
    refused snapshot must leave behind)."""
    state = {}
    for root, dirs, files in os.walk(path):
        for d in dirs:
            state[os.path.relpath(os.path.join(root, d), path) + "/"] = "dir"
        for f in files:
            full = os.path.join(root, f)
            digest = hashlib.sha256()
            with open(full, "rb") as fh:
                while chunk := fh.read(1 << 20):  # attack files can be 100 MB
                    digest.update(chunk)
            state[os.path.relpath(full, path)] = digest.hexdigest()
    return state
