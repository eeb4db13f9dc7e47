"""Packing: the session's database cut down to a tier, compacted, and encoded as snapshot text.

Pipeline of `pack`: consistent copy with SQLite's backup API (neonize may be writing meanwhile; the
live file and its -journal/-wal are never read directly) -> a fresh database with 1024-byte pages
holding only the tier's rows, inserted in primary-key order -> deterministic tar (fixed order, zero
mtimes/ids) -> gzip (mtime 0) -> base64. The same database content gives the same text, so "did
anything change" is a string compare.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sqlite3
import tarfile
import uuid
import zlib

from snapshot.fill import Fill, fill_core, ranking
from snapshot.format import (AUTO_TIERS, DB_NAME, DEFAULT_BUDGET, FCOMMENT, FORMAT_ID, OWN_PREFIX, gzip_comment, PACK_PAGE_SIZE, TIERS,
                             SnapshotError, SnapshotTooLarge, file_uri, quote_identifier, row_filter)


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
        ranked = ranking(copy.conn)
        if tier is not None:
            if tier == "core":  # an explicit "core" carries what fits the budget
                found = fill_core(lambda k, limit: _encode_tier(copy, "core", limit, k), ranked, budget)
                if found is not None:
                    return found[0]
            text = _encode_tier(copy, tier, None, Fill.nothing() if tier == "core" else Fill.everything(ranked))
            if len(text) > budget:
                raise SnapshotTooLarge({tier: len(text)}, budget)
            return text
        # Walk up from the smallest tier and stop at the first that does not fit: tiers are nested,
        # so a bigger one cannot fit either, and the big tiers of a big account are never built.
        # "core" is filled to the budget; the tiers above it are tried only when it holds every
        # unused pre-key and every peer's keys. A tier that adds no rows to the one below keeps the
        # smaller name, so the same database always gets the same label (repacking a restored "core"
        # session gives the same text).
        best = previous_db = None
        for name in reversed(AUTO_TIERS):
            if name == "core":
                found = fill_core(lambda k, limit: _encode_tier(copy, "core", limit, k), ranked, budget)
                if found is None:
                    break
                text, keep = found
                db = _build_tier(copy, name, keep)
                if db != previous_db:
                    best, previous_db = text, db
                if not keep.is_everything(ranked):
                    break
                continue
            db = _build_tier(copy, name, Fill.everything(ranked))
            if db == previous_db:
                continue
            text = _encode(db, name, limit=budget)
            if text is None:
                break
            best, previous_db = text, db
        if best is None:
            sizes = {name: len(_encode_tier(copy, name, None, Fill.nothing() if name == "core"
                                            else Fill.everything(ranked))) for name in AUTO_TIERS}
            raise SnapshotTooLarge(sizes, budget)
        return best
    finally:
        copy.close()


def pack_for_store(session_dir, target: int, ceiling: int, stop_saved_at: int | None = None) -> dict:
    """What a save needs, in one pass: the most complete tier within `target` characters, else within
    `ceiling` (the hard limit), with its description. Raises SnapshotTooLarge or SnapshotError.

    `stop_saved_at` (Unix seconds): a save at the dyno's stop marks the snapshot with its time, so
    the boots after it know when the last one was (stopsave.py)."""
    try:
        limit, over_target = min(target, ceiling), False
        text = pack(session_dir, limit)
    except SnapshotTooLarge:
        if ceiling <= target:
            raise
        limit, over_target = ceiling, True
        text = pack(session_dir, limit)
    plain = text  # what "did anything change" compares: the same budget gives the same text
    if stop_saved_at is not None:
        text = restamp(plain, {"stopSavedAt": int(stop_saved_at)})
        if len(text) > limit:
            text = restamp(pack(session_dir, limit - STAMP_ROOM), {"stopSavedAt": int(stop_saved_at)})
    from snapshot.unpacking import inspect  # the same checks a restore makes; unpack imports nothing of pack

    return {"text": text, "plain": plain, "overTarget": over_target, "info": inspect(text).as_dict()}




class _Copy:
    """An in-memory copy of the live database, reachable from other connections by URI."""

    def __init__(self, conn: sqlite3.Connection, uri: str):
        self.conn, self.uri = conn, uri

    def close(self):
        self.conn.close()  # the shared in-memory database disappears with its last connection


def _consistent_copy(db_path: str) -> _Copy:
    if not os.path.isfile(db_path):
        raise SnapshotError(f"no session database at {db_path}; nothing to save")
    uri = f"file:snapshot-{uuid.uuid4().hex}?mode=memory&cache=shared"
    mem = sqlite3.connect(uri, uri=True)
    try:
        # The backup API copies pages under one read transaction (pages=-1: a single step), so the
        # copy is a committed state even while neonize writes; its -journal/-wal is never read
        # raw. neonize's driver waits up to 5 s on a busy database, longer than this copy takes.
        live = sqlite3.connect(file_uri(db_path, "rw"), uri=True, timeout=10)
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


def _build_tier_db(copy: _Copy, tier: str, keep: Fill) -> bytes:
    """A compact database holding the tier's rows, as bytes. Deterministic for the same content:
    fixed statement order, rows inserted in primary-key order, fresh rowids."""
    out = sqlite3.connect(":memory:", uri=True, isolation_level=None)
    try:
        out.execute(f"PRAGMA page_size = {PACK_PAGE_SIZE}")
        out.execute("PRAGMA trusted_schema = OFF")
        out.execute("ATTACH DATABASE ? AS src", (copy.uri,))
        keep.into_temp_tables(out)
        # Our own tables and triggers (OWN_PREFIX) steer packing only; tables and indexes SQLite
        # makes itself (sqlite_%) come with the rows.
        schema = out.execute(
            "SELECT type, name, tbl_name, sql FROM src.sqlite_master WHERE sql IS NOT NULL"
            " AND name NOT LIKE 'sqlite_%' AND name NOT LIKE ? AND tbl_name NOT LIKE ? ORDER BY rowid",
            (OWN_PREFIX + "%", OWN_PREFIX + "%"),
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
            where = row_filter(table, tier)
            if where is None:
                continue
            columns = out.execute(f"PRAGMA src.table_info({quote_identifier(table)})").fetchall()
            # Primary-key columns first, then the rest: a total, content-only order.
            keyed = sorted((c for c in columns if c[5]), key=lambda c: c[5]) + [c for c in columns if not c[5]]
            order = ", ".join(f"t.{quote_identifier(c[1])}" for c in keyed)
            names = ", ".join(quote_identifier(c[1]) for c in columns)
            picked = ", ".join(f"t.{quote_identifier(c[1])}" for c in columns)
            out.execute(
                f"INSERT INTO main.{quote_identifier(table)} ({names}) SELECT {picked}"
                f" FROM src.{quote_identifier(table)} AS t WHERE {where} ORDER BY {order}"
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


def _gzip(data: bytes, comment: bytes, limit_bytes: int | None) -> bytes | None:
    """One gzip member: mtime 0, no file name, the manifest as FCOMMENT, deflate level 9.
    Gives up and returns None as soon as the output passes `limit_bytes`: key material does not
    compress, so a tier that is over after a prefix stays over."""
    header = b"\x1f\x8b\x08" + bytes([FCOMMENT]) + b"\x00\x00\x00\x00" + b"\x02\xff" + comment + b"\x00"
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


def _build_tier(copy: _Copy, tier: str, keep: Fill) -> bytes:
    try:
        return _build_tier_db(copy, tier, keep)
    except sqlite3.Error as exc:
        raise SnapshotError(f"cannot compact the session database to tier {tier!r}: {exc}") from exc


def _encode_tier(copy: _Copy, tier: str, limit: int | None, keep: Fill) -> str | None:
    return _encode(_build_tier(copy, tier, keep), tier, limit)


# What a stop stamp may add to the text: ',"stopSavedAt":NNNNNNNNNN' is 25 bytes, 36 characters of base64.
STAMP_ROOM = 40


def restamp(text: str, extra: dict) -> str:
    """Our snapshot with `extra` added to its manifest; the compressed database is untouched (so
    format.content_of says the content is the same)."""
    data = base64.b64decode(text)
    comment = gzip_comment(data)
    if comment is None or data[3] != FCOMMENT:
        raise SnapshotError("only snapshots made by this bot can be stamped")
    manifest = {**json.loads(comment), **extra}
    encoded = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("ascii")
    return base64.b64encode(data[:10] + encoded + b"\x00" + data[10 + len(comment) + 1:]).decode("ascii")


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


