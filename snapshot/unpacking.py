"""Reading snapshots, which are untrusted input: inspect one, restore one, read a session's device.

A snapshot is untrusted input (anyone who can set the config var writes it). `inspect` and `unpack`
decode it as a stream bounded by MAX_UNCOMPRESSED_BYTES, keep only the `neonize.db` member (a -wal's
committed frames are folded in by Python; a -journal, whose super-journal field names a file SQLite
would delete, and every other member are dropped), open it read-only and immutable, and `unpack`
restores its rows into a copy of the empty database neonize's own migrations make, so no trigger,
view or foreign column of the snapshot survives.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import dataclasses
import datetime
import io
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import tarfile
import tempfile
import threading
import zlib

from neonize_schema import run_migrations
from snapshot.fence import raise_prekey_ids
from fsutil import finish_interrupted_swap, fsync_path, swap_into_place
from snapshot.format import (DB_NAME, FORMAT_ID, MAX_COMMENT, MAX_MEMBERS, MAX_UNCOMPRESSED_BYTES,
                             SQLITE_MAGIC, InvalidSnapshot, SnapshotError, SnapshotInfo, file_uri,
                             gzip_comment, quote_identifier)
from textsafe import printable

def inspect(text) -> SnapshotInfo:
    """Describe a snapshot (ours or plain) after the same checks `unpack` makes.

    `text` is the snapshot as str/bytes or a binary stream (the CLI's stdin): it is decoded piece by
    piece, so memory stays bounded by the snapshot cap whatever the input's size. The database is
    streamed into a private scratch directory and opened read-only and immutable: SQLite then looks
    for no journal and writes nothing, so describing a snapshot can change and delete nothing.
    """
    try:
        with tempfile.TemporaryDirectory(prefix="snapshot-inspect-") as scratch:
            parsed = _parse(text, scratch)
            conn = _open_read_only(parsed.db_path)
            try:
                return _describe(parsed, _validate(conn))
            finally:
                conn.close()
    except OSError as exc:
        # The scratch copy could not be written (/tmp full?): a SnapshotError, which the boot-time
        # inspect in session_manager handles, rather than a crash at start.
        raise SnapshotError(f"cannot read the snapshot: {exc.strerror or exc}") from exc


def unpack(text, session_dir) -> SnapshotInfo:
    """Restore a snapshot into `session_dir`, replacing what is there only once it is validated.

    The restored database is a copy of neonize's own empty schema holding the snapshot's rows (see
    `_rebuild`): nothing of the snapshot's schema (triggers, views, extra tables or columns) and no
    member other than the database reaches the session directory. `text` as for `inspect`.

    The directory is replaced as a whole (do not call while neonize has the database open). On any
    error the existing directory is untouched and the temporary directories are removed.
    """
    session_dir = os.path.realpath(os.fspath(session_dir))
    try:
        # Every structural check happens on a scratch copy before anything touches the session's parent.
        with tempfile.TemporaryDirectory(prefix="snapshot-unpack-") as scratch:
            parsed = _parse(text, scratch)
            source = _open_read_only(parsed.db_path)
            try:
                facts = _validate(source)
            finally:
                source.close()
            return _restore(parsed, facts, session_dir)
    except OSError as exc:
        raise SnapshotError(
            f"cannot restore the session into {session_dir}: {exc.strerror or exc}"
            " (is the parent directory writable, is the disk full?)"
        ) from exc


def _restore(parsed, facts, session_dir: str) -> SnapshotInfo:
    template = _neonize_template()
    if facts.schema_version != template.version:
        # Rows of another schema version cannot be put into this one's tables by column name alone
        # (whatsmeow's migrations may move data), and running neonize's migrations over the
        # snapshot's own schema would run its triggers too.
        raise InvalidSnapshot(
            f"the snapshot has whatsmeow schema v{printable(facts.schema_version)}, this neonize makes "
            f"v{template.version}; open it once with this neonize version and save a new snapshot"
        )
    parent, name = os.path.split(session_dir)
    if os.path.lexists(session_dir) and not os.path.isdir(session_dir):
        raise SnapshotError(f"{session_dir} exists and is not a directory")
    finish_interrupted_swap(session_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.unpack-", dir=parent)  # same filesystem: rename works
    try:
        db_path = os.path.join(tmp, DB_NAME)
        _rebuild(parsed.db_path, template.path, db_path)
        _fence_prekey_ids(db_path)
        conn = sqlite3.connect(file_uri(db_path, "ro"), uri=True)
        try:
            conn.execute("PRAGMA trusted_schema = OFF")
            facts = _validate(conn)  # what is restored, not what the snapshot claimed
        finally:
            conn.close()
        for leftover in os.listdir(tmp):
            if leftover != DB_NAME:  # nothing is expected here; never restore anything but the database
                os.remove(os.path.join(tmp, leftover))
        fsync_path(db_path)
        fsync_path(tmp)
        old = swap_into_place(tmp, session_dir)
        tmp = old  # the replaced session (or nothing) is what remains to delete
        fsync_path(parent)
        return _describe(parsed, facts)
    finally:
        if tmp and os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _fence_prekey_ids(db_path: str) -> None:
    """The restored session mints pre-key ids no earlier boot from this snapshot minted (fence.py)."""
    conn = sqlite3.connect(file_uri(db_path, "rw"), uri=True, isolation_level=None)
    try:
        conn.execute("BEGIN")
        raise_prekey_ids(conn)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise SnapshotError(f"cannot set the pre-key id fence in the restored session: {exc}") from None
    finally:
        conn.close()


def describe_restore(info: SnapshotInfo) -> str:
    """One line about a restored snapshot for logs and the CLI, its text escaped: JID, format, tier
    and the members that were dropped."""
    line = f"{printable(info.device_jid)} ({info.format}, tier {printable(info.tier or 'all')})"
    if info.ignored_members:
        line += f"; not restored from the snapshot: {', '.join(info.ignored_members)}"
    return line


def has_valid_session(session_dir) -> bool:
    """True when `session_dir` holds a database with a device row that passes a quick check.
    Like `device_jid`, it first finishes a directory swap a crash interrupted (see
    `swap_into_place`), so the previous session is found again."""
    return device_jid(session_dir) is not None


def device_jid(session_dir) -> str | None:
    """The logged-in device's JID in `session_dir`, or None when there is no valid session."""
    session_dir = os.path.realpath(os.fspath(session_dir))
    finish_interrupted_swap(session_dir)
    path = os.path.join(session_dir, DB_NAME)
    if not os.path.isfile(path):
        return None
    try:
        # mode=rw: never creates a file, but lets SQLite roll back a hot journal as neonize would.
        conn = sqlite3.connect(file_uri(path, "rw"), uri=True, timeout=5)
    except sqlite3.Error:
        return None
    try:
        conn.execute("PRAGMA trusted_schema = OFF")
        if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            return None
        row = conn.execute("SELECT jid FROM whatsmeow_device ORDER BY jid LIMIT 1").fetchone()
        return row[0] if row and row[0] else None
    except sqlite3.Error:
        return None
    finally:
        conn.close()




@dataclasses.dataclass
class _Parsed:
    db_path: str  # the database member, streamed into a private scratch file
    manifest: dict | None
    encoded_chars: int
    compressed_bytes: int
    raw_bytes: int
    db_mtime: int
    ignored: list  # printable names of the members that are not restored


# How much snapshot text is decoded at a time, and how much of the decoded gzip is kept for the header
# checks (gzip magic, a tar mistaken for gzip, the FCOMMENT manifest behind an FEXTRA/FNAME).
_TEXT_PIECE = 1 << 16
_HEAD_BYTES = 2 + 65535 + 4096 + MAX_COMMENT + 16


def _text_pieces(text):
    """The snapshot text as ASCII bytes, a piece at a time: from a str/bytes value or a stream."""
    if isinstance(text, (str, bytes, bytearray)):
        pieces = (text[i:i + _TEXT_PIECE] for i in range(0, len(text), _TEXT_PIECE))
    elif hasattr(text, "read"):
        pieces = iter(lambda: text.read(_TEXT_PIECE), text.read(0))
    else:
        raise InvalidSnapshot("the snapshot must be text")
    for piece in pieces:
        if isinstance(piece, str):
            if not piece.isascii():
                raise InvalidSnapshot("the snapshot is not valid base64 (cut short, or mangled when copied?)")
            piece = piece.encode("ascii")
        elif not piece.isascii():
            raise InvalidSnapshot("the snapshot is not base64 text (non-ASCII bytes)")
        yield bytes(piece)


class _Decoded:
    """Iterates over the base64-decoded bytes of the snapshot text; never holds more than a piece.
    Counts what went by (`encoded_chars`, `total`) and keeps the first bytes in `head`."""

    def __init__(self, text):
        self._pieces = _text_pieces(text)
        self.encoded_chars = 0
        self.total = 0
        self.head = b""
        self._chunks = self._decode()

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        chunk = next(self._chunks)
        self.total += len(chunk)
        if len(self.head) < _HEAD_BYTES:
            self.head += chunk[:_HEAD_BYTES - len(self.head)]
        return chunk

    def _decode(self):
        carry, ended = b"", False
        for piece in self._pieces:
            compact = b"".join(piece.split())  # `base64` wraps at 76 columns; config vars gain whitespace
            if not compact:
                continue
            if ended:  # data after the padding that ended the text
                raise _bad_base64()
            self.encoded_chars += len(compact)
            data = carry + compact
            cut = len(data) - len(data) % 4  # decode whole quanta; the rest waits for the next piece
            data, carry = data[:cut], data[cut:]
            if not data:
                continue
            ended = data.endswith(b"=")
            try:
                yield base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise _bad_base64() from None
        if carry:
            raise _bad_base64()
        if not self.encoded_chars:
            raise InvalidSnapshot("the snapshot is empty")


def _bad_base64() -> InvalidSnapshot:
    return InvalidSnapshot("the snapshot is not valid base64 (cut short, or mangled when copied?)")


def _compressed(decoded: _Decoded):
    """The decoded bytes, after checking they start like gzip (and saying so when they are a tar)."""
    first = []
    size = 0
    for chunk in decoded:
        first.append(chunk)
        size += len(chunk)
        if size >= 262:
            break
    head = b"".join(first)
    if head[:2] != b"\x1f\x8b":
        if head[257:262] == b"ustar":
            raise InvalidSnapshot("the snapshot is an uncompressed tar; make it with `tar czf` (gzip)")
        raise InvalidSnapshot("the snapshot is not gzip data (expected base64 of a .tar.gz)")
    yield head
    yield from decoded


class _GunzipReader(io.RawIOBase):
    """Streams the decompressed bytes of one or more gzip members with a hard size cap. Pulls the
    compressed input from an iterator, so neither side is ever held whole."""

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._src = b""  # compressed bytes not given to the decompressor yet
        self._dec = zlib.decompressobj(31)
        self._pending = b""
        self.total = 0
        self._done = False

    def readable(self):
        return True

    def _next_chunk(self):
        return next(self._chunks, None)

    def _more(self, want: int) -> bytes:
        while not self._done:
            if self._dec.eof:
                rest = self._dec.unused_data + self._src
                self._src = b""
                while len(rest) < 2:
                    chunk = self._next_chunk()
                    if chunk is None:
                        break
                    rest += chunk
                if rest[:2] == b"\x1f\x8b":  # a further gzip member (e.g. `cat a.gz b.gz`)
                    self._dec = zlib.decompressobj(31)
                    self._src = rest
                    continue
                while rest is not None:  # only NUL padding may follow; checked a piece at a time
                    if rest.strip(b"\x00"):
                        raise InvalidSnapshot("unexpected data after the end of the gzip stream")
                    rest = self._next_chunk()
                self._done = True
                break
            if self._dec.unconsumed_tail:
                src = self._dec.unconsumed_tail
            else:
                if not self._src:
                    self._src = self._next_chunk() or b""
                    if not self._src:
                        raise InvalidSnapshot("the gzip stream is truncated (the snapshot was cut short)")
                src, self._src = self._src[:65536], self._src[65536:]
            try:
                out = self._dec.decompress(src, max(want, 65536))
            except zlib.error as exc:
                raise InvalidSnapshot(f"corrupt gzip data ({exc})") from None
            if out:
                self.total += len(out)
                if self.total > MAX_UNCOMPRESSED_BYTES:
                    raise InvalidSnapshot(
                        f"snapshot expands beyond {MAX_UNCOMPRESSED_BYTES // 2**20} MiB "
                        "(a decompression bomb, or not a session)"
                    )
                return out
        return b""

    def readinto(self, buffer) -> int:
        want = len(buffer)
        if not self._pending:
            self._pending = self._more(want)
        n = min(want, len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def drain(self):
        """Read to the end so the gzip CRC and length are checked and truncation is noticed."""
        while self._more(65536):
            pass


def _member_path(name: str) -> str:
    """The member's normalized relative path; raises on absolute paths and `..`."""
    if name.startswith("/") or name.startswith("\\"):
        raise InvalidSnapshot(f"absolute path in the snapshot: {name[:100]!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidSnapshot(f"path leaving the session directory in the snapshot: {name[:100]!r}")
    return "/".join(parts)


# Scratch names of the two members that are read. Neither ends in -journal/-wal/-shm of the other,
# and the database is only ever opened immutable: SQLite never looks for a file beside it.
_SCRATCH_DB = "snapshot-database"
_SCRATCH_WAL = "snapshot-wal-frames"


def _parse(text, scratch: str) -> _Parsed:
    """Every structural check of a snapshot, streaming: the database member goes to `scratch`.

    Only `neonize.db` is kept. A plain tar of a live session directory may also carry its -wal: its
    committed frames are folded into the database here, in Python (`_merge_wal`), so they are not lost
    and SQLite never sees the file. Every other member (-journal, -shm, anything else) is dropped
    unread and named in `ignored`: a rollback journal names a file SQLite deletes when it rolls the
    journal back, so it must never be placed where SQLite looks for it.
    """
    decoded = _Decoded(text)
    reader = _GunzipReader(_compressed(decoded))
    found: dict = {}
    ignored: list = []
    seen: set = set()
    nested_db = None
    db_mtime = 0
    count = 0
    declared = 0
    try:
        with tarfile.open(fileobj=io.BufferedReader(reader, 65536), mode="r|") as tar:
            for member in tar:
                count += 1
                if count > MAX_MEMBERS:
                    raise InvalidSnapshot(f"the snapshot has more than {MAX_MEMBERS} entries")
                path = _member_path(member.name)
                if member.issym() or member.islnk():
                    raise InvalidSnapshot(f"links are not allowed in a snapshot: {member.name[:100]!r}")
                if member.isdev():  # character/block devices and FIFOs
                    raise InvalidSnapshot(
                        f"device files and FIFOs are not allowed in a snapshot: {member.name[:100]!r}"
                    )
                if member.isdir():
                    continue
                if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                    raise InvalidSnapshot(f"unsupported entry type in the snapshot: {member.name[:100]!r}")
                declared += member.size
                if declared > MAX_UNCOMPRESSED_BYTES:
                    raise InvalidSnapshot(
                        f"the snapshot's files add up to more than {MAX_UNCOMPRESSED_BYTES // 2**20} MiB "
                        "(a decompression bomb, or not a session)"
                    )
                if path in seen:
                    raise InvalidSnapshot(f"the snapshot holds {path[:100]!r} twice")
                seen.add(path)
                target = {DB_NAME: _SCRATCH_DB, DB_NAME + "-wal": _SCRATCH_WAL}.get(path)
                if target:
                    found[path] = os.path.join(scratch, target)
                    _stream_to_private(tar.extractfile(member), found[path])
                    if path == DB_NAME:
                        db_mtime = int(member.mtime or 0)
                else:
                    ignored.append(printable(path[:100]))
                    if path.endswith("/" + DB_NAME):
                        nested_db = path
        reader.drain()
    except SnapshotError:
        raise
    except (tarfile.TarError, EOFError, ValueError, UnicodeError, OverflowError) as exc:
        raise InvalidSnapshot(f"the snapshot is not a valid tar archive ({exc})") from None
    if DB_NAME not in found:
        hint = (
            f"; it has {nested_db!r} - make snapshots with `tar czf - -C SESSION_DIR .`"
            if nested_db else ""
        )
        raise InvalidSnapshot(f"the snapshot holds no {DB_NAME}{hint}")
    db_path = found[DB_NAME]
    with open(db_path, "rb") as fh:
        if fh.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise InvalidSnapshot(f"{DB_NAME} in the snapshot is not an SQLite database")
    if DB_NAME + "-wal" in found:
        _merge_wal(db_path, found[DB_NAME + "-wal"])
        os.remove(found[DB_NAME + "-wal"])
    _leave_wal_mode(db_path)
    manifest = None
    comment = gzip_comment(decoded.head)
    if comment:
        try:
            candidate = json.loads(comment.decode("latin-1"))
        except ValueError:
            candidate = None
        if isinstance(candidate, dict) and candidate.get("format") == FORMAT_ID:
            manifest = candidate
    return _Parsed(
        db_path=db_path,
        manifest=manifest,
        encoded_chars=decoded.encoded_chars,
        compressed_bytes=decoded.total,
        raw_bytes=reader.total,
        db_mtime=db_mtime,
        ignored=ignored,
    )


def _stream_to_private(source, path: str):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        if source is not None:
            shutil.copyfileobj(source, fh, 65536)


# ---- folding a plain snapshot's -wal into its database (https://sqlite.org/fileformat2.html#walformat)

_WAL_MAGICS = (0x377F0682, 0x377F0683)  # the low bit says the checksums are big-endian


def _wal_checksum(data: bytes, s0: int, s1: int, big_endian: bool) -> tuple:
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def _db_page_size(db_path: str) -> int:
    with open(db_path, "rb") as fh:
        header = fh.read(100)
    if len(header) < 100:
        return 0
    size = int.from_bytes(header[16:18], "big")
    return 65536 if size == 1 else size


def _merge_wal(db_path: str, wal_path: str):
    """Apply the committed frames of a WAL to the database file, as SQLite's recovery would: frames
    are read while their salts and cumulative checksums hold, up to the last commit frame. A WAL that
    SQLite would ignore (bad header, other page size) is ignored. Sizes are bounded by the snapshot
    cap, so a hostile WAL cannot make a huge (sparse) file; it can only change the database's own
    pages, which the snapshot could do directly anyway."""
    page_size = _db_page_size(db_path)
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


def _leave_wal_mode(db_path: str):
    """Mark the scratch database as a rollback-journal database (header bytes 18-19: 2 -> 1), what
    `PRAGMA journal_mode = DELETE` does once the WAL is folded in: it is opened immutable, without any
    -wal beside it."""
    with open(db_path, "r+b") as fh:
        fh.seek(18)
        if fh.read(2) == b"\x02\x02":
            fh.seek(18)
            fh.write(b"\x01\x01")


def _read_only_uri(path: str) -> str:
    # immutable=1: SQLite takes no locks and looks for no -journal/-wal/-shm; mode=ro: it cannot write.
    return file_uri(path, "ro") + "&immutable=1"


def _open_read_only(path: str) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(_read_only_uri(path), uri=True)
        conn.execute("PRAGMA trusted_schema = OFF")  # no SQL functions with side effects from its schema
        conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        raise InvalidSnapshot(f"{DB_NAME} in the snapshot cannot be opened ({exc})") from None
    return conn


# ---- neonize's own schema

@dataclasses.dataclass
class _Template:
    path: str
    version: int | None


_template: _Template | None = None
_template_lock = threading.Lock()


def _neonize_template() -> _Template:
    """An empty database made by neonize's own migrations, made once per process (~1 s) and copied
    for every restore. In a child process: neonize's Go runtime must not be loaded into the caller,
    which may be the bot itself (see session_manager._snapshot_cli on two SQLite copies in one process)."""
    global _template
    with _template_lock:
        if _template is not None and os.path.isfile(_template.path):
            return _template
        directory = tempfile.mkdtemp(prefix="snapshot-schema-")
        atexit.register(shutil.rmtree, directory, True)
        path = os.path.join(directory, DB_NAME)
        try:
            done = run_migrations(path, timeout=120, cwd=directory)
            output = (done.stderr + done.stdout).strip().splitlines()
        except (OSError, subprocess.TimeoutExpired) as exc:
            output = [str(exc)]
        try:
            conn = sqlite3.connect(_read_only_uri(path), uri=True)
            try:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                version = conn.execute("SELECT MAX(version) FROM whatsmeow_version").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.Error:
            tables, version = set(), None
        if "whatsmeow_device" not in tables:
            raise SnapshotError(
                "neonize did not create its database schema, needed to restore a snapshot "
                f"({(output or ['no output'])[-1][:300]})"
            )
        os.chmod(path, 0o400)
        _template = _Template(path, version)
        return _template


def _rebuild(source_path: str, template_path: str, target_path: str):
    """Write at `target_path` a copy of neonize's empty database holding the snapshot's rows.

    Only what neonize's schema defines is carried over: its tables, and in them the columns it
    defines. The snapshot's triggers, views, indexes, extra tables and columns stay behind, and its
    CHECK constraints and defaults are neonize's. Identifiers come from the template and are quoted;
    no value is ever part of the SQL text.
    """
    shutil.copyfile(template_path, target_path)
    os.chmod(target_path, 0o600)
    conn = sqlite3.connect(file_uri(target_path, "rw"), uri=True, isolation_level=None)
    try:
        conn.execute("PRAGMA trusted_schema = OFF")
        conn.execute("ATTACH DATABASE ? AS src", (_read_only_uri(source_path),))
        conn.execute("BEGIN")
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM main.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
            " ORDER BY name")]
        for table in tables:
            if table == "whatsmeow_version":
                continue  # the template's own, checked equal to the snapshot's
            theirs = conn.execute(
                "SELECT type, sql FROM src.sqlite_master WHERE name = ? COLLATE NOCASE", (table,)
            ).fetchone()
            # A view or a virtual table under a whatsmeow name is not a table of rows to copy.
            if not theirs or theirs[0] != "table" or (theirs[1] or "").lstrip().upper().startswith("CREATE VIRTUAL"):
                continue
            their_columns = {r[1].lower() for r in conn.execute(f"PRAGMA src.table_info({quote_identifier(table)})")}
            columns = [r[1] for r in conn.execute(f"PRAGMA main.table_info({quote_identifier(table)})")
                       if r[1].lower() in their_columns]
            if columns:
                names = ", ".join(quote_identifier(c) for c in columns)
                conn.execute(f"INSERT INTO main.{quote_identifier(table)} ({names}) SELECT {names} FROM src.{quote_identifier(table)}")
        conn.execute("COMMIT")
        conn.execute("DETACH DATABASE src")
    except sqlite3.Error as exc:
        raise InvalidSnapshot(
            f"the rows of {DB_NAME} in the snapshot do not fit neonize's schema ({printable(exc)})"
        ) from None
    finally:
        conn.close()


@dataclasses.dataclass
class _Facts:
    jid: str
    lid: str | None
    adv_details: bytes | None
    prekeys: int
    uploaded_prekeys: int
    max_prekey_id: int | None
    schema_version: int | None
    db_bytes: int
    rows: dict


_COUNTED_TABLES = ("whatsmeow_sessions", "whatsmeow_identity_keys", "whatsmeow_contacts",
                   "whatsmeow_sender_keys", "whatsmeow_app_state_sync_keys")


def _validate(conn: sqlite3.Connection) -> _Facts:
    """integrity_check and a device row, as the restored session must pass both."""
    try:
        result = [r[0] for r in conn.execute("PRAGMA integrity_check(5)")]
    except sqlite3.DatabaseError as exc:
        raise InvalidSnapshot(f"{DB_NAME} in the snapshot is not a usable database ({exc})") from None
    if result != ["ok"]:
        # The messages name the snapshot's own indexes and tables: escaped, they are logged.
        raise InvalidSnapshot(f"{DB_NAME} in the snapshot is corrupt: {printable('; '.join(result)[:300])}")
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "whatsmeow_device" not in tables:
            raise InvalidSnapshot(f"{DB_NAME} in the snapshot is not a whatsmeow database")
        row = conn.execute(
            "SELECT jid, lid, adv_details FROM whatsmeow_device ORDER BY jid LIMIT 1"
        ).fetchone()
        if not row or not row[0]:
            raise InvalidSnapshot(
                "the snapshot's database has no logged-in device (it was saved before pairing "
                "or after a logout); pair again and save a new snapshot"
            )
        prekeys = uploaded = 0
        max_prekey = None
        if "whatsmeow_pre_keys" in tables:
            prekeys, uploaded, max_prekey = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(uploaded != 0), 0), MAX(key_id) FROM whatsmeow_pre_keys"
            ).fetchone()
        version = None
        if "whatsmeow_version" in tables:
            v = conn.execute("SELECT MAX(version) FROM whatsmeow_version").fetchone()
            version = v[0] if v else None
        rows = {t[len("whatsmeow_"):]: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in _COUNTED_TABLES if t in tables}
        page_count = conn.execute("PRAGMA page_count").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise InvalidSnapshot(f"{DB_NAME} in the snapshot cannot be read ({exc})") from None
    return _Facts(
        jid=row[0], lid=row[1] or None, adv_details=row[2] if isinstance(row[2], bytes) else None,
        prekeys=prekeys, uploaded_prekeys=uploaded, max_prekey_id=max_prekey, schema_version=version,
        db_bytes=page_count * page_size, rows=rows,
    )


def _varint_field(data: bytes, wanted: int):
    """The value of varint field `wanted` in a protobuf message, or None."""
    pos = 0

    def varint():
        nonlocal pos
        shift = value = 0
        while True:
            b = data[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    try:
        while pos < len(data):
            key = varint()
            field, wire = key >> 3, key & 7
            if wire == 0:
                value = varint()
                if field == wanted:
                    return value
            elif wire == 2:
                pos += varint()
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            else:
                return None
    except (IndexError, ValueError):
        return None
    return None


def _iso(ts) -> str | None:
    if not ts or ts <= 0:
        return None
    try:
        return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return None


def _stop_stamp(manifest: dict | None) -> int | None:
    value = (manifest or {}).get("stopSavedAt")
    # Untrusted text: only a plausible number of seconds counts.
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**40 else None


def _describe(parsed: _Parsed, facts: _Facts) -> SnapshotInfo:
    # ADVDeviceIdentity field 2 is the link time (seconds).
    paired = _varint_field(facts.adv_details, 2) if facts.adv_details else None
    return SnapshotInfo(
        format="ours" if parsed.manifest else "plain tar",
        tier=parsed.manifest.get("tier") if parsed.manifest else None,
        encoded_chars=parsed.encoded_chars,
        compressed_bytes=parsed.compressed_bytes,
        raw_bytes=parsed.raw_bytes,
        db_bytes=facts.db_bytes,
        device_jid=facts.jid,
        device_lid=facts.lid,
        prekeys=facts.prekeys,
        uploaded_prekeys=facts.uploaded_prekeys,
        max_prekey_id=facts.max_prekey_id,
        schema_version=facts.schema_version,
        paired_at=_iso(paired),
        stop_saved_at=_stop_stamp(parsed.manifest),
        created_at=_iso(parsed.db_mtime),
        rows=facts.rows,
        ignored_members=list(parsed.ignored),
    )


