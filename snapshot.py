"""Session snapshots small enough for a Heroku config var, and safe to restore.

A snapshot is base64 (one line) of a gzip'd tar holding `neonize.db`, the whatsmeow SQLite
database of the session, cut down to a *tier* and compacted. The format and tier are recorded as a
small JSON text in the gzip header's comment field (RFC 1952 FCOMMENT): it costs ~50 bytes instead of
a ~150-byte tar member, and it never lands in a session directory, so a directory extracted with
plain tar and later re-snapshotted by hand cannot carry a stale "tier" claim. Plain
`base64 -d | tar xz` gives a directory neonize opens as is, and snapshots made by the plain shell
(`tar czf - -C session . | base64 -w0`) are accepted by `unpack` too.

Why tiers: a used account's database is megabytes, mostly Signal ratchets and caches, while all
config vars of a Heroku app share 64 KB. Each tier drops what whatsmeow can refetch, rebuild or
recover from peers; the smallest one still logs in as the same device. See `_TABLE_RULES`.

Pipeline of `pack`: consistent copy with SQLite's backup API (neonize may be writing meanwhile; the
live file and its -journal/-wal are never read directly) -> a fresh database with 1024-byte pages
holding only the tier's rows, inserted in primary-key order -> deterministic tar (fixed order, zero
mtimes/ids) -> gzip (mtime 0) -> base64. The same database content gives the same text, so "did
anything change" is a string compare.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import dataclasses
import datetime
import errno
import io
import json
import os
import pathlib
import shutil
import sqlite3
import sys
import tarfile
import tempfile
import uuid
import zlib

from errors import BotError
from fsutil import fsync_path

DB_NAME = "neonize.db"
FORMAT_ID = "neonize-session-snapshot/1"

# A quarter of Heroku's 64 KB config-var limit (see DESIGN.md, "Snapshot size policy").
DEFAULT_BUDGET = 16384

# Small pages: each of whatsmeow's ~36 B-trees (17 tables and their key indexes) costs at least one
# page, mostly empty. Measured on the "core" tier, 1024 compresses ~2% better than 512 (less
# overflow chaining of the schema text) and ~7% better than 4096. `unpack` converts back to 4096 so
# the restored database grows with normal pages.
PACK_PAGE_SIZE = 1024
RESTORED_PAGE_SIZE = 4096

# Decompression-bomb caps. gzip can expand ~1000:1, so a 64 KB config var could claim ~64 MB; our
# 3000-contact profile is ~7 MB raw. 128 MiB leaves room for a heavy account's plain snapshot moved
# from a laptop while bounding memory (we hold at most the database and its WAL) on a 512 MB dyno.
MAX_UNCOMPRESSED_BYTES = 128 * 1024 * 1024
# A session directory holds the database and maybe its -wal/-shm/-journal. 256 entries allow odd
# extras while stopping a tar of millions of empty members from burning CPU.
MAX_MEMBERS = 256

# How many pre-keys the "core" tier keeps. Each costs ~66 characters (32 random bytes plus its row
# and index entry) and the rest of a fresh "core" snapshot ~4,700, so 16 keeps a fresh pairing under
# 6,000 characters. More would buy little: after a restore the server still holds hundreds of our
# keys that no snapshot this size can carry, and a peer that draws a missing one costs one retry
# receipt (retry.go sends a fresh pre-key with it), not a lost message.
CORE_PREKEYS = 16

TIERS = ("full", "crypto", "peers", "core", "login")

_SQLITE_MAGIC = b"SQLite format 3\x00"
_SIDE_SUFFIXES = ("-wal", "-journal")  # needed to recover a plain snapshot; -shm is rebuilt


class SnapshotError(BotError):
    """Base class: a snapshot could not be made, read or restored."""

    summary = "the session could not be packed into a snapshot or restored from one"


class InvalidSnapshot(SnapshotError):
    """The snapshot text is broken, hostile or does not hold a usable session."""


class SnapshotTooLarge(SnapshotError):
    """Even the smallest allowed tier is longer than the budget."""

    summary = "the session does not fit the size budget"

    def __init__(self, sizes: dict, budget: int):
        self.sizes = dict(sizes)  # tier -> encoded characters
        self.budget = budget
        listed = ", ".join(f"{t}={n:,}" for t, n in self.sizes.items())
        super().__init__(
            f"session snapshot does not fit in {budget:,} characters (tier sizes: {listed}); "
            "free config-var space, raise the budget, or keep the session in Postgres"
        )


# ---------------------------------------------------------------------------------------------
# What each tier keeps, table by table (whatsmeow schema v15, store/sqlstore/upgrades).
# Tiers are nested: each keeps a subset of the one before, so sizes only shrink down the list.
#   ALL = every row, NONE = no rows (the table and its schema are always kept, empty), or a filter.
# ---------------------------------------------------------------------------------------------
ALL, NONE = "1", None

# Pre-keys are one-time keys uploaded to WhatsApp; a peer starting a session with us gets one from
# the server and we need its private half to decrypt that first message (the row is deleted after
# use). Rows with uploaded=false were never given to the server and are regenerated on demand.
# getNextPreKeyID is MAX(key_id)+1, so the highest row is always kept: dropping it would make
# whatsmeow reissue ids the server still hands out, with different keys (undecryptable messages).
_MAX_PREKEY = "t.key_id = (SELECT MAX(p.key_id) FROM src.whatsmeow_pre_keys p WHERE p.jid = t.jid)"
_UPLOADED_PREKEYS = f"t.uploaded OR {_MAX_PREKEY}"
# We assume the server hands out the oldest (lowest-id) keys first, as Signal's server does (not
# verified for WhatsApp; under any other order keeping the lowest is no worse than another pick),
# so the lowest uploaded ids are the ones peers will use next. A peer whose key we lack gets a
# retry receipt carrying a fresh key (retry.go sendRetryReceipt), so it recovers.
_NEXT_PREKEYS = (
    f"(t.uploaded AND t.key_id IN (SELECT p.key_id FROM src.whatsmeow_pre_keys p WHERE p.jid = t.jid"
    f" AND p.uploaded ORDER BY p.key_id LIMIT {CORE_PREKEYS})) OR {_MAX_PREKEY}"
)

#                                        full crypto peers  core   login
_TABLE_RULES = {
    # Schema version: without it neonize would re-run every migration over existing tables.
    "whatsmeow_version":                 (ALL, ALL, ALL, ALL, ALL),
    # The login itself: JID, noise/identity/signed pre-key, ADV signatures. Never dropped.
    "whatsmeow_device":                  (ALL, ALL, ALL, ALL, ALL),
    # Salt for cstokens (cstoken.go); 32 bytes, only re-sent by the phone via app state.
    "whatsmeow_nct_salt":                (ALL, ALL, ALL, ALL, ALL),
    "whatsmeow_pre_keys":                (ALL, ALL, _UPLOADED_PREKEYS, _NEXT_PREKEYS, _MAX_PREKEY),
    # Keys that decrypt app-state patches. A few dozen small rows; without them whatsmeow must ask
    # the phone again (works only while the phone is online), so kept down to "core".
    "whatsmeow_app_state_sync_keys":     (ALL, ALL, ALL, ALL, NONE),
    # Per-peer trust and addressing, ~60 bytes per contact: identity keys (trust on first use,
    # re-learned from the next message), privacy tokens (sent with 1:1 messages; re-issued by
    # peers), LID<->phone map (refetched through usync when missing).
    "whatsmeow_identity_keys":           (ALL, ALL, ALL, NONE, NONE),
    "whatsmeow_privacy_tokens":          (ALL, ALL, ALL, NONE, NONE),
    "whatsmeow_lid_map":                 (ALL, ALL, ALL, NONE, NONE),
    # Signal ratchets, the bulk of a used account (~1 KB per peer device). A snapshot's copy goes
    # stale as soon as the live ratchet moves; peers recover through retry receipts and fresh
    # sessions; our own group sender key is regenerated and redistributed.
    "whatsmeow_sessions":                (ALL, ALL, NONE, NONE, NONE),
    "whatsmeow_sender_keys":             (ALL, ALL, NONE, NONE, NONE),
    # Per-message secrets (poll votes, edits, reactions to earlier messages). Cannot be refetched,
    # but only matter for messages sent before the snapshot; grows with message count.
    "whatsmeow_message_secrets":         (ALL, ALL, NONE, NONE, NONE),
    # App-state sync progress: version + LTHash and the MAC of every mutation. They must travel
    # together (a version without its MACs fails the next patch's hash check). Without them
    # whatsmeow does a full app-state sync from the server snapshot (appstate.go: version 0).
    "whatsmeow_app_state_version":       (ALL, NONE, NONE, NONE, NONE),
    "whatsmeow_app_state_mutation_macs": (ALL, NONE, NONE, NONE, NONE),
    # Caches filled from app state and push names; rebuilt by that full sync.
    "whatsmeow_contacts":                (ALL, NONE, NONE, NONE, NONE),
    "whatsmeow_chat_settings":           (ALL, NONE, NONE, NONE, NONE),
    # Transient buffers: decrypted-but-unhandled events (only meaningful next to the exact ratchet
    # state) and plaintext of recently sent messages kept to answer retries for a few minutes.
    "whatsmeow_event_buffer":            (ALL, NONE, NONE, NONE, NONE),
    "whatsmeow_retry_buffer":            (ALL, NONE, NONE, NONE, NONE),
}
# A table not listed (a newer whatsmeow, or not whatsmeow's) cannot be judged: only "full", an
# exact copy, carries its rows; the other tiers keep its schema, empty.
_UNKNOWN_TABLE_RULE = (ALL, NONE, NONE, NONE, NONE)


def _row_filter(table: str, tier: str):
    return _TABLE_RULES.get(table, _UNKNOWN_TABLE_RULE)[TIERS.index(tier)]


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SnapshotInfo:
    """What a snapshot holds; never key material."""

    format: str  # "ours" or "plain tar"
    tier: str | None  # None for a plain tar (everything the directory held)
    encoded_chars: int
    compressed_bytes: int
    raw_bytes: int  # the uncompressed tar stream
    db_bytes: int
    device_jid: str | None
    device_lid: str | None
    prekeys: int
    uploaded_prekeys: int
    schema_version: int | None
    paired_at: str | None  # from the device's ADV identity (when the phone linked it)
    created_at: str | None  # the database member's mtime; ours are zeroed for determinism
    rows: dict  # row counts of the tables that say how "full" the session is

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def pack(session_dir, budget: int = DEFAULT_BUDGET, tier: str | None = None) -> str:
    """Snapshot text of the session in `session_dir`, at most `budget` characters long.

    Without `tier`, the most complete tier that fits; with it, exactly that tier.
    Raises SnapshotTooLarge (nothing is written anywhere) or SnapshotError.
    """
    if tier is not None and tier not in TIERS:
        raise SnapshotError(f"unknown tier {tier!r}; choose one of {', '.join(TIERS)}")
    if not isinstance(budget, int) or budget <= 0:
        raise SnapshotError(f"budget must be a positive number of characters, got {budget!r}")
    copy = _consistent_copy(os.path.join(os.fspath(session_dir), DB_NAME))
    try:
        if not copy.conn.execute("SELECT 1 FROM whatsmeow_device LIMIT 1").fetchone():
            raise SnapshotError(
                f"the session in {session_dir} has no logged-in device; pair first, then save"
            )
        if tier is not None:
            text = _encode_tier(copy, tier)
            if len(text) > budget:
                raise SnapshotTooLarge({tier: len(text)}, budget)
            return text
        # Walk up from the smallest tier and stop at the first that does not fit: tiers are nested,
        # so a bigger one cannot fit either, and the big tiers of a big account are never built.
        # A tier that adds no rows to the one below keeps the smaller name, so the same database
        # always gets the same label (repacking a restored "core" session gives the same text).
        best = previous_db = None
        for name in reversed(TIERS):
            db = _build_tier(copy, name)
            if db == previous_db:
                continue
            text = _encode(db, name, limit=budget)
            if text is None:
                break
            best, previous_db = text, db
        if best is None:
            sizes = {name: len(_encode_tier(copy, name)) for name in TIERS}
            raise SnapshotTooLarge(sizes, budget)
        return best
    finally:
        copy.close()


def inspect(text: str) -> SnapshotInfo:
    """Describe a snapshot (ours or plain) after the same checks `unpack` makes; writes nothing
    unless the snapshot carries a -wal/-journal, which is replayed in a private temp directory."""
    parsed = _parse(text)
    if not parsed.side_files:
        conn = sqlite3.connect(":memory:")
        try:
            try:
                conn.deserialize(parsed.db)
            except sqlite3.Error as exc:
                raise InvalidSnapshot(f"{DB_NAME} in the snapshot is not a usable database ({exc})")
            return _describe(parsed, _validate(conn))
        finally:
            conn.close()
    with tempfile.TemporaryDirectory(prefix="snapshot-inspect-") as tmp:
        conn = _open_extracted(parsed, tmp)
        try:
            return _describe(parsed, _validate(conn))
        finally:
            conn.close()


def unpack(text: str, session_dir) -> SnapshotInfo:
    """Restore a snapshot into `session_dir`, replacing what is there only once it is validated.

    The directory is replaced as a whole (do not call while neonize has the database open). On any
    error the existing directory is untouched and the temporary directory next to it is removed.
    """
    parsed = _parse(text)  # every structural check, in memory, before anything touches the disk
    session_dir = os.path.realpath(os.fspath(session_dir))
    try:
        return _restore(parsed, session_dir)
    except OSError as exc:
        raise SnapshotError(
            f"cannot restore the session into {session_dir}: {exc.strerror or exc}"
            " (is the parent directory writable, is the disk full?)"
        ) from exc


def _restore(parsed, session_dir: str) -> SnapshotInfo:
    parent, name = os.path.split(session_dir)
    if os.path.lexists(session_dir) and not os.path.isdir(session_dir):
        raise SnapshotError(f"{session_dir} exists and is not a directory")
    _finish_interrupted_swap(session_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.unpack-", dir=parent)  # same filesystem: rename works
    try:
        conn = _open_extracted(parsed, tmp)
        try:
            facts = _validate(conn)
            _normalize(conn)
        finally:
            conn.close()
        for leftover in os.listdir(tmp):
            if leftover != DB_NAME:  # -shm, an emptied -wal: nothing of value is left in them
                os.remove(os.path.join(tmp, leftover))
        fsync_path(os.path.join(tmp, DB_NAME))
        fsync_path(tmp)
        old = _swap_into_place(tmp, session_dir)
        tmp = old  # the replaced session (or nothing) is what remains to delete
        fsync_path(parent)
        return _describe(parsed, facts)
    finally:
        if tmp and os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def pack_for_store(session_dir, target: int, ceiling: int) -> dict:
    """What a save needs, in one pass: the most complete tier within `target` characters, else within
    `ceiling` (the hard limit), with its description. Raises SnapshotTooLarge or SnapshotError."""
    try:
        text = pack(session_dir, min(target, ceiling))
        over_target = False
    except SnapshotTooLarge:
        if ceiling <= target:
            raise
        text = pack(session_dir, ceiling)
        over_target = True
    return {"text": text, "overTarget": over_target, "info": inspect(text).as_dict()}


def has_valid_session(session_dir) -> bool:
    """True when `session_dir` holds a database with a device row that passes a quick check.
    Like `device_jid`, it first finishes a directory swap a crash interrupted (see
    `_swap_into_place`), so the previous session is found again."""
    return device_jid(session_dir) is not None


def device_jid(session_dir) -> str | None:
    """The logged-in device's JID in `session_dir`, or None when there is no valid session."""
    session_dir = os.path.realpath(os.fspath(session_dir))
    _finish_interrupted_swap(session_dir)
    path = os.path.join(session_dir, DB_NAME)
    if not os.path.isfile(path):
        return None
    try:
        # mode=rw: never creates a file, but lets SQLite roll back a hot journal as neonize would.
        conn = sqlite3.connect(_file_uri(path, "rw"), uri=True, timeout=5)
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


# ---------------------------------------------------------------------------------------------
# pack internals
# ---------------------------------------------------------------------------------------------


class _Copy:
    """An in-memory copy of the live database, reachable from other connections by URI."""

    def __init__(self, conn: sqlite3.Connection, uri: str):
        self.conn, self.uri = conn, uri

    def close(self):
        self.conn.close()  # the shared in-memory database disappears with its last connection


def _file_uri(path: str, mode: str) -> str:
    return pathlib.Path(os.path.abspath(path)).as_uri() + f"?mode={mode}"


def _consistent_copy(db_path: str) -> _Copy:
    if not os.path.isfile(db_path):
        raise SnapshotError(f"no session database at {db_path}; nothing to save")
    uri = f"file:snapshot-{uuid.uuid4().hex}?mode=memory&cache=shared"
    mem = sqlite3.connect(uri, uri=True)
    try:
        # The backup API copies pages under one read transaction (pages=-1: a single step), so the
        # copy is a committed state even while neonize writes; its -journal/-wal is never read
        # raw. neonize's driver waits up to 5 s on a busy database, longer than this copy takes.
        live = sqlite3.connect(_file_uri(db_path, "rw"), uri=True, timeout=10)
        try:
            live.backup(mem, pages=-1)
        finally:
            live.close()
        mem.execute("PRAGMA trusted_schema = OFF")
        names = {r[0] for r in mem.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as exc:
        mem.close()
        raise SnapshotError(f"cannot read the session database {db_path}: {exc}") from exc
    if "whatsmeow_device" not in names:
        mem.close()
        raise SnapshotError(f"{db_path} is not a whatsmeow database (no whatsmeow_device table)")
    return _Copy(mem, uri)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _build_tier_db(copy: _Copy, tier: str) -> bytes:
    """A compact database holding the tier's rows, as bytes. Deterministic for the same content:
    fixed statement order, rows inserted in primary-key order, fresh rowids."""
    out = sqlite3.connect(":memory:", uri=True, isolation_level=None)
    try:
        out.execute(f"PRAGMA page_size = {PACK_PAGE_SIZE}")
        out.execute("PRAGMA trusted_schema = OFF")
        out.execute("ATTACH DATABASE ? AS src", (copy.uri,))
        schema = out.execute(
            "SELECT type, name, tbl_name, sql FROM src.sqlite_master"
            " WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
        ).fetchall()
        user_version = out.execute("PRAGMA src.user_version").fetchone()[0]
        application_id = out.execute("PRAGMA src.application_id").fetchone()[0]
        out.execute("BEGIN")
        out.execute(f"PRAGMA main.user_version = {int(user_version)}")
        out.execute(f"PRAGMA main.application_id = {int(application_id)}")
        tables = [(name, sql) for kind, name, _, sql in schema if kind == "table"]
        for _, sql in tables:
            out.execute(sql)
        for table, _ in tables:
            where = _row_filter(table, tier)
            if where is None:
                continue
            columns = out.execute(f"PRAGMA src.table_info({_quote(table)})").fetchall()
            # Primary-key columns first, then the rest: a total, content-only order.
            keyed = sorted((c for c in columns if c[5]), key=lambda c: c[5]) + [c for c in columns if not c[5]]
            order = ", ".join(f"t.{_quote(c[1])}" for c in keyed)
            names = ", ".join(_quote(c[1]) for c in columns)
            picked = ", ".join(f"t.{_quote(c[1])}" for c in columns)
            out.execute(
                f"INSERT INTO main.{_quote(table)} ({names}) SELECT {picked}"
                f" FROM src.{_quote(table)} AS t WHERE {where} ORDER BY {order}"
            )
        if out.execute("SELECT 1 FROM src.sqlite_master WHERE name='sqlite_sequence'").fetchone():
            out.execute("INSERT INTO main.sqlite_sequence SELECT * FROM src.sqlite_sequence ORDER BY name")
        # Indexes after the rows (built by sorting), triggers last so copying fires none.
        for kind in ("index", "view", "trigger"):
            for k, _, _, sql in schema:
                if k == kind:
                    out.execute(sql)
        out.execute("COMMIT")
        out.execute("DETACH DATABASE src")
        return out.serialize()
    finally:
        out.close()


def _tar_bytes(members: list) -> bytes:
    """A tar of (name, bytes) in the given order with every varying header field zeroed."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o600  # key material: owner-only when a user extracts with plain tar
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


_FCOMMENT = 0x10
_MAX_COMMENT = 1024


def _gzip(data: bytes, comment: bytes, limit_bytes: int | None) -> bytes | None:
    """One gzip member: mtime 0, no file name, the manifest as FCOMMENT, deflate level 9.
    Gives up and returns None as soon as the output passes `limit_bytes`: key material does not
    compress, so a tier that is over after a prefix stays over."""
    header = b"\x1f\x8b\x08" + bytes([_FCOMMENT]) + b"\x00\x00\x00\x00" + b"\x02\xff" + comment + b"\x00"
    comp = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    out = [header]
    size = len(header)
    step = 32768
    for start in range(0, len(data), step):
        chunk = comp.compress(data[start:start + step])
        out.append(chunk)
        size += len(chunk)
        if limit_bytes is not None and size > limit_bytes:
            return None
    out.append(comp.flush())
    out.append((zlib.crc32(data) & 0xFFFFFFFF).to_bytes(4, "little"))
    out.append((len(data) & 0xFFFFFFFF).to_bytes(4, "little"))
    return b"".join(out)


def _gzip_comment(data: bytes) -> bytes | None:
    """The FCOMMENT of the first gzip member, or None (absent, or a malformed header - the
    decompressor reports those)."""
    if len(data) < 10 or data[:3] != b"\x1f\x8b\x08":
        return None
    flags, pos = data[3], 10
    try:
        if flags & 0x04:  # FEXTRA
            pos += 2 + int.from_bytes(data[pos:pos + 2], "little")
        if flags & 0x08:  # FNAME
            pos = data.index(b"\x00", pos, pos + 4096) + 1
        if flags & _FCOMMENT:
            end = data.index(b"\x00", pos, pos + _MAX_COMMENT)
            return data[pos:end]
    except ValueError:
        return None
    return None


def _build_tier(copy: _Copy, tier: str) -> bytes:
    try:
        return _build_tier_db(copy, tier)
    except sqlite3.Error as exc:
        raise SnapshotError(f"cannot compact the session database to tier {tier!r}: {exc}") from exc


def _encode_tier(copy: _Copy, tier: str, limit: int | None = None) -> str | None:
    return _encode(_build_tier(copy, tier), tier, limit)


def _encode(db: bytes, tier: str, limit: int | None) -> str | None:
    manifest = json.dumps({"format": FORMAT_ID, "tier": tier}, sort_keys=True, separators=(",", ":"))
    raw = _tar_bytes([(DB_NAME, db)])
    limit_bytes = None if limit is None else limit * 3 // 4
    packed = _gzip(raw, manifest.encode("ascii"), limit_bytes)
    if packed is None:
        return None
    text = base64.b64encode(packed).decode("ascii")
    if limit is not None and len(text) > limit:
        return None
    return text


# ---------------------------------------------------------------------------------------------
# unpack / inspect internals
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Parsed:
    db: bytes
    side_files: dict  # "-wal"/"-journal" suffix -> bytes (plain snapshots of a live directory)
    manifest: dict | None
    encoded_chars: int
    compressed_bytes: int
    raw_bytes: int
    db_mtime: int


class _GunzipReader(io.RawIOBase):
    """Streams the decompressed bytes of one or more gzip members with a hard size cap."""

    def __init__(self, data: bytes):
        self._data = data
        self._pos = 0
        self._dec = zlib.decompressobj(31)
        self._pending = b""
        self.total = 0
        self._done = False

    def readable(self):
        return True

    def _more(self, want: int) -> bytes:
        while not self._done:
            if self._dec.eof:
                rest = self._dec.unused_data + self._data[self._pos:]
                self._pos = len(self._data)
                if rest[:2] == b"\x1f\x8b":  # a further gzip member (e.g. `cat a.gz b.gz`)
                    self._dec = zlib.decompressobj(31)
                    self._data, self._pos = rest, 0
                    continue
                if rest.strip(b"\x00"):
                    raise InvalidSnapshot("unexpected data after the end of the gzip stream")
                self._done = True
                break
            if self._dec.unconsumed_tail:
                src = self._dec.unconsumed_tail
            elif self._pos < len(self._data):
                src = self._data[self._pos:self._pos + 65536]
                self._pos += len(src)
            else:
                raise InvalidSnapshot("the gzip stream is truncated (the snapshot was cut short)")
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


def _decode_text(text) -> tuple:
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError:
            raise InvalidSnapshot("the snapshot is not base64 text (non-ASCII bytes)") from None
    if not isinstance(text, str):
        raise InvalidSnapshot("the snapshot must be text")
    compact = "".join(text.split())  # `base64` wraps at 76 columns; config vars may gain whitespace
    if not compact:
        raise InvalidSnapshot("the snapshot is empty")
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSnapshot(
            "the snapshot is not valid base64 (cut short, or mangled when copied?)"
        ) from None
    if data[:2] != b"\x1f\x8b":
        if data[257:262] == b"ustar":
            raise InvalidSnapshot("the snapshot is an uncompressed tar; make it with `tar czf` (gzip)")
        raise InvalidSnapshot("the snapshot is not gzip data (expected base64 of a .tar.gz)")
    return data, len(compact)


def _member_path(name: str) -> str:
    """The member's normalized relative path; raises on absolute paths and `..`."""
    if name.startswith("/") or name.startswith("\\"):
        raise InvalidSnapshot(f"absolute path in the snapshot: {name[:100]!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidSnapshot(f"path leaving the session directory in the snapshot: {name[:100]!r}")
    return "/".join(parts)


def _parse(text) -> _Parsed:
    compressed, encoded_chars = _decode_text(text)
    reader = _GunzipReader(compressed)
    wanted = {DB_NAME} | {DB_NAME + s for s in _SIDE_SUFFIXES}
    found: dict = {}
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
                if path in wanted:
                    handle = tar.extractfile(member)
                    found[path] = handle.read() if handle else b""
                    if path == DB_NAME:
                        db_mtime = int(member.mtime or 0)
                elif path.endswith("/" + DB_NAME):
                    nested_db = path
        reader.drain()
    except SnapshotError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError, UnicodeError, OverflowError) as exc:
        raise InvalidSnapshot(f"the snapshot is not a valid tar archive ({exc})") from None
    if DB_NAME not in found:
        hint = (
            f"; it has {nested_db!r} - make snapshots with `tar czf - -C SESSION_DIR .`"
            if nested_db else ""
        )
        raise InvalidSnapshot(f"the snapshot holds no {DB_NAME}{hint}")
    db = found[DB_NAME]
    if not db.startswith(_SQLITE_MAGIC):
        raise InvalidSnapshot(f"{DB_NAME} in the snapshot is not an SQLite database")
    manifest = None
    comment = _gzip_comment(compressed)
    if comment:
        try:
            candidate = json.loads(comment.decode("latin-1"))
        except ValueError:
            candidate = None
        if isinstance(candidate, dict) and candidate.get("format") == FORMAT_ID:
            manifest = candidate
    return _Parsed(
        db=db,
        side_files={s: found[DB_NAME + s] for s in _SIDE_SUFFIXES if DB_NAME + s in found},
        manifest=manifest,
        encoded_chars=encoded_chars,
        compressed_bytes=len(compressed),
        raw_bytes=reader.total,
        db_mtime=db_mtime,
    )


def _write_private(path: str, data: bytes):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _open_extracted(parsed: _Parsed, directory: str) -> sqlite3.Connection:
    """Write the database (and any -wal/-journal, so SQLite recovers it as it would in place) into
    `directory` and open it."""
    db_path = os.path.join(directory, DB_NAME)
    _write_private(db_path, parsed.db)
    for suffix, data in parsed.side_files.items():
        _write_private(db_path + suffix, data)
    try:
        conn = sqlite3.connect(_file_uri(db_path, "rw"), uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise InvalidSnapshot(f"{DB_NAME} in the snapshot cannot be opened ({exc})") from None
    try:
        conn.execute("PRAGMA trusted_schema = OFF")  # no SQL functions with side effects from its schema
        conn.execute("PRAGMA temp_store = MEMORY")  # VACUUM's scratch copy must not land in /tmp
    except sqlite3.Error as exc:
        conn.close()
        raise InvalidSnapshot(f"{DB_NAME} in the snapshot cannot be opened ({exc})") from None
    return conn


@dataclasses.dataclass
class _Facts:
    jid: str
    lid: str | None
    adv_details: bytes | None
    prekeys: int
    uploaded_prekeys: int
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
        raise InvalidSnapshot(f"{DB_NAME} in the snapshot is corrupt: {'; '.join(result)[:300]}")
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
        if "whatsmeow_pre_keys" in tables:
            prekeys, uploaded = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(uploaded != 0), 0) FROM whatsmeow_pre_keys"
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
        prekeys=prekeys, uploaded_prekeys=uploaded, schema_version=version,
        db_bytes=page_count * page_size, rows=rows,
    )


def _normalize(conn: sqlite3.Connection):
    """Make the validated copy a plain rollback-journal database with normal pages, the way
    neonize creates them: fold a WAL in, and grow our 512-byte pages back to 4096."""
    try:
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA journal_mode = DELETE")
        if conn.execute("PRAGMA page_size").fetchone()[0] < RESTORED_PAGE_SIZE:
            conn.execute(f"PRAGMA page_size = {RESTORED_PAGE_SIZE}")
            conn.execute("VACUUM")
    except sqlite3.Error as exc:
        raise InvalidSnapshot(f"{DB_NAME} in the snapshot could not be prepared ({exc})") from None


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
        schema_version=facts.schema_version,
        paired_at=_iso(paired),
        created_at=_iso(parsed.db_mtime),
        rows=facts.rows,
    )


# ---------------------------------------------------------------------------------------------
# Swapping the restored directory into place
# ---------------------------------------------------------------------------------------------

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _backup_name(session_dir: str) -> str:
    parent, name = os.path.split(session_dir)
    return os.path.join(parent, f".{name}.snapshot-old")


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE). False if unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), b)


def _swap_into_place(new_dir: str, session_dir: str) -> str | None:
    """Put `new_dir` at `session_dir`; returns the path now holding the old session, if any.

    With RENAME_EXCHANGE there is no moment without a session directory. Without it (some
    filesystems), the old directory is renamed aside first; a crash between the two renames leaves
    it at `.NAME.snapshot-old`, which `_finish_interrupted_swap` moves back on the next call.
    """
    if not os.path.lexists(session_dir):
        os.rename(new_dir, session_dir)
        return None
    if _exchange(new_dir, session_dir):
        return new_dir
    backup = _backup_name(session_dir)
    if os.path.lexists(backup):
        shutil.rmtree(backup)  # left by an earlier swap that finished both renames
    os.rename(session_dir, backup)
    os.rename(new_dir, session_dir)
    return backup


def _finish_interrupted_swap(session_dir: str):
    backup = _backup_name(session_dir)
    if not os.path.lexists(session_dir) and os.path.isdir(backup):
        os.rename(backup, session_dir)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

# Exit status of the CLI for SnapshotTooLarge, so a caller running it as a subprocess can tell it apart
# (argparse uses 2 for usage errors).
EXIT_TOO_LARGE = 3

_USAGE = f"""%(prog)s COMMAND ...
  pack DIR [--budget N] [--tier T]   snapshot of the session in DIR to stdout
  unpack DIR < snapshot              restore a snapshot (ours or `tar czf - -C DIR . | base64`)
  inspect < snapshot                 describe a snapshot as JSON (no key material)
  probe DIR                          {{"jid": ...}} of the logged-in device in DIR (null: none)
  pack-json DIR --target N --ceiling N   for a save: {{"text", "overTarget", "info"}} or {{"error"}}
exit status: 0 done, 1 error, {EXIT_TOO_LARGE} snapshot over the budget even at its smallest tier
tiers, most complete first: {', '.join(TIERS)}; default budget {DEFAULT_BUDGET} characters"""


def _cli_args(argv):
    import argparse

    parser = argparse.ArgumentParser(prog=os.path.basename(sys.argv[0] or "snapshot.py"), usage=_USAGE)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("dir")
    p.add_argument("--budget", type=int, default=DEFAULT_BUDGET)
    p.add_argument("--tier", choices=TIERS)
    u = sub.add_parser("unpack")
    u.add_argument("dir")
    sub.add_parser("inspect")
    sub.add_parser("probe").add_argument("dir")
    j = sub.add_parser("pack-json")
    j.add_argument("dir")
    j.add_argument("--target", type=int, required=True)
    j.add_argument("--ceiling", type=int, required=True)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = _cli_args(sys.argv[1:] if argv is None else argv)
    if args.command == "pack-json":
        # For the parent process of a save: everything it needs, or the typed error, as one JSON line.
        try:
            print(json.dumps(pack_for_store(args.dir, args.target, args.ceiling)))
        except SnapshotError as exc:
            error = {"type": type(exc).__name__, "message": str(exc)}
            if isinstance(exc, SnapshotTooLarge):
                error.update(sizes=exc.sizes, budget=exc.budget)
            print(json.dumps({"error": error}))
        return 0
    try:
        if args.command == "pack":
            sys.stdout.write(pack(args.dir, args.budget, args.tier))
            sys.stdout.flush()
        elif args.command == "probe":
            print(json.dumps({"jid": device_jid(args.dir)}))
        elif args.command == "unpack":
            info = unpack(sys.stdin.read(), args.dir)
            print(f"restored {info.device_jid} ({info.format}, tier {info.tier or 'all'}) into {args.dir}",
                  file=sys.stderr)
        else:
            print(json.dumps(inspect(sys.stdin.read()).as_dict(), indent=2))
    except SnapshotTooLarge as exc:
        print(f"error: {exc}", file=sys.stderr)
        # The figures again, as JSON on the last line, for a caller that runs this as a subprocess.
        print(json.dumps({"sizes": exc.sizes, "budget": exc.budget}), file=sys.stderr)
        return EXIT_TOO_LARGE
    except SnapshotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc.strerror or exc} ({exc.filename or ''})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
