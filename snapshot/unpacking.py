"""Reading snapshots, which are untrusted input: inspect one, restore one, read a session's device.

A snapshot is untrusted input (anyone who can set the config var writes it). `inspect` and `unpack`
decode it as a stream bounded by MAX_UNCOMPRESSED_BYTES, keep only the `neonize.db` member (a -wal's
committed frames are folded in by Python; a -journal, whose super-journal field names a file SQLite
would delete, and every other member are dropped), open it read-only and immutable, and `unpack`
restores its rows into a copy of the empty database neonize's own migrations make, so no trigger,
view or foreign column of the snapshot survives.

This module runs the steps in order; each step is its own module with its own rules for hostile input:
decoding.py (base64 and gzip, bounded), tarheaders.py (every raw tar header checked before `tarfile`
parses it), tarreading.py (which members are kept), walfold.py (a -wal folded in, in Python),
validation.py (the database opened read-only, checked, every value bounded), rebuild.py (neonize's
empty schema and the rows put into it), description.py (SnapshotInfo, never key material).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
import tempfile

from snapshot.fence import raise_prekey_ids
from fsutil import finish_interrupted_swap, fsync_path, swap_into_place
from snapshot.decoding import Decoded, GunzipReader, gzip_chunks
from snapshot.description import describe
from snapshot.format import (DB_NAME, FORMAT_ID, SQLITE_MAGIC, InvalidSnapshot, SnapshotError, SnapshotInfo,
                             file_uri, gzip_comment)
from snapshot.rebuild import neonize_template, rebuild
from snapshot.tarreading import read_members
from snapshot.validation import open_read_only, validate
from snapshot.walfold import db_page_size, leave_wal_mode, merge_wal
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
            conn = open_read_only(parsed.db_path)
            try:
                return describe(parsed, validate(conn))
            finally:
                conn.close()
    except OSError as exc:
        # The scratch copy could not be written (/tmp full?): a SnapshotError, which the boot-time
        # inspect in session_manager handles, rather than a crash at start.
        raise SnapshotError(f"cannot read the snapshot: {exc.strerror or exc}") from exc


def unpack(text, session_dir) -> SnapshotInfo:
    """Restore a snapshot into `session_dir`, replacing what is there only once it is validated.

    The restored database is a copy of neonize's own empty schema holding the snapshot's rows (see
    `rebuild.rebuild`): nothing of the snapshot's schema (triggers, views, extra tables or columns) and no
    member other than the database reaches the session directory. `text` as for `inspect`.

    The directory is replaced as a whole (do not call while neonize has the database open). On any
    error the existing directory is untouched and the temporary directories are removed.
    """
    session_dir = os.path.realpath(os.fspath(session_dir))
    try:
        # Every structural check happens on a scratch copy before anything touches the session's parent.
        with tempfile.TemporaryDirectory(prefix="snapshot-unpack-") as scratch:
            parsed = _parse(text, scratch)
            source = open_read_only(parsed.db_path)
            try:
                facts = validate(source)
            finally:
                source.close()
            return _restore(parsed, facts, session_dir)
    except OSError as exc:
        raise SnapshotError(
            f"cannot restore the session into {session_dir}: {exc.strerror or exc}"
            " (is the parent directory writable, is the disk full?)"
        ) from exc


def _restore(parsed, facts, session_dir: str) -> SnapshotInfo:
    template = neonize_template()
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
        rebuild(parsed.db_path, template.path, db_path)
        _fence_prekey_ids(db_path)
        conn = sqlite3.connect(file_uri(db_path, "ro"), uri=True)
        try:
            conn.execute("PRAGMA trusted_schema = OFF")
            facts = validate(conn)  # what is restored, not what the snapshot claimed
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
        return describe(parsed, facts)
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
class Parsed:
    db_path: str  # the database member, streamed into a private scratch file
    manifest: dict | None
    encoded_chars: int
    compressed_bytes: int
    raw_bytes: int
    db_mtime: int
    ignored: list  # printable names of the members that are not restored


def _parse(text, scratch: str) -> Parsed:
    """Every structural check of a snapshot, streaming: the database member goes to `scratch`.

    Only `neonize.db` is kept. A plain tar of a live session directory may also carry its -wal: its
    committed frames are folded into the database here, in Python (walfold.merge_wal), so they are not
    lost and SQLite never sees the file. Every other member (-journal, -shm, anything else) is dropped
    unread and named in `ignored`: a rollback journal names a file SQLite deletes when it rolls the
    journal back, so it must never be placed where SQLite looks for it.
    """
    decoded = Decoded(text)
    reader = GunzipReader(gzip_chunks(decoded))
    members = read_members(reader, scratch)
    reader.drain()
    if DB_NAME not in members.found:
        hint = (
            f"; it has {printable(members.nested_db, 100)!r} - make snapshots with `tar czf - -C SESSION_DIR .`"
            if members.nested_db else ""
        )
        raise InvalidSnapshot(f"the snapshot holds no {DB_NAME}{hint}")
    db_path = members.found[DB_NAME]
    with open(db_path, "rb") as fh:
        if fh.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise InvalidSnapshot(f"{DB_NAME} in the snapshot is not an SQLite database")
    db_page_size(db_path)  # a power of two from 512 to 65536, or refused
    if DB_NAME + "-wal" in members.found:
        merge_wal(db_path, members.found[DB_NAME + "-wal"])
        os.remove(members.found[DB_NAME + "-wal"])
    leave_wal_mode(db_path)
    manifest = None
    comment = gzip_comment(decoded.head)
    if comment:
        try:
            candidate = json.loads(comment.decode("latin-1"))
        except ValueError:
            candidate = None
        if isinstance(candidate, dict) and candidate.get("format") == FORMAT_ID:
            manifest = candidate
    return Parsed(
        db_path=db_path,
        manifest=manifest,
        encoded_chars=decoded.encoded_chars,
        compressed_bytes=decoded.total,
        raw_bytes=reader.total,
        db_mtime=members.db_mtime,
        ignored=members.ignored,
    )
