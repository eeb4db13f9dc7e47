"""Snapshots of real neonize-made databases: tiers, round trips through neonize's own reader,
determinism, plain-shell interop, hostile inputs, packing under concurrent writes, and the CLI."""

from __future__ import annotations

import base64
import io
import json
import os
import random
import shutil
import sqlite3
import struct
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import zlib

import pytest

import fsutil
import snapshot
import snapshot.fence
import snapshot.tarreading
from snapshot import InvalidSnapshot, SnapshotError, SnapshotTooLarge
from tests.support import wadb
from tests.support.hostile import tree_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------- helpers


@pytest.fixture
def fresh(tmp_path):
    return wadb.make_session(str(tmp_path / "session"), "fresh", seed=7)


@pytest.fixture
def used(tmp_path):
    return wadb.make_session(str(tmp_path / "session"), "50", seed=11)


@pytest.fixture
def no_fence(monkeypatch):
    """Restores without the pre-key id fence (tested on its own in test_prekey_fence.py), so a round
    trip can be compared row for row."""
    monkeypatch.setattr(snapshot.fence, "FENCE_EPOCH", 2**40)


@pytest.fixture(scope="session")
def big(tmp_path_factory):
    return wadb.make_session(str(tmp_path_factory.mktemp("big") / "session"), "3000", seed=3)



def b64_targz(members, gzip_it=True) -> str:
    """Base64 of a tar.gz built from (TarInfo, bytes|None) pairs."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    raw = buf.getvalue()
    return base64.b64encode(_gzip(raw) if gzip_it else raw).decode()


def _gzip(data: bytes) -> bytes:
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    return comp.compress(data) + comp.flush()


def reg(name, data: bytes):
    info = tarfile.TarInfo(name)
    info.type = tarfile.REGTYPE
    return info, data


def special(name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def table_rows(db_path) -> dict:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {n: sorted(conn.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr) for n in names}
    finally:
        conn.close()


def schema_sql(db_path) -> list:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return sorted(r[0] for r in conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"))
    finally:
        conn.close()


def members_of(text: str) -> list:
    raw = base64.b64decode(text)
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        return [(m.name, m.type, m.mtime, m.uid, m.gid) for m in tar.getmembers()]


# ------------------------------------------------------------------------------- tiers


def test_default_tier_of_a_fresh_pairing_is_small_and_keeps_the_device(fresh, tmp_path):
    text = snapshot.pack(fresh.session_dir)
    assert len(text) <= snapshot.DEFAULT_BUDGET
    assert snapshot.inspect(text).prekeys > snapshot.PREKEY_FLOOR  # plus the highest id
    assert "\n" not in text and text.strip() == text
    info = snapshot.inspect(text)
    assert info.format == "ours" and info.tier == "core"
    assert info.device_jid == fresh.jid
    assert info.encoded_chars == len(text)


def test_tiers_are_nested_and_shrink(used):
    sizes = [len(snapshot.pack(used.session_dir, budget=snapshot.DEFAULT_BUDGET if t == "core" else 10**9, tier=t))
             for t in snapshot.TIERS]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] > 5 * sizes[-2]  # "full" of a used account is far bigger than "core"


def test_default_picks_the_most_complete_tier_that_fits(fresh):
    peers = snapshot.pack(fresh.session_dir, budget=10**9, tier="peers")
    # A save never picks "crypto" or "full" by itself: they carry 1:1 sessions (format.AUTO_TIERS).
    assert snapshot.pack(fresh.session_dir, budget=10**9) == snapshot.pack(fresh.session_dir, budget=10**9, tier="core")
    everything = snapshot.pack(fresh.session_dir, budget=10**9)
    below = snapshot.pack(fresh.session_dir, budget=len(everything) - 1)
    # A fresh pairing has no peers, so "peers" holds exactly what a "core" with every pre-key holds
    # and carries the smaller name; one character less and a pre-key stays behind.
    assert snapshot.inspect(snapshot.pack(fresh.session_dir, budget=10**9)).tier == "core"
    assert snapshot.inspect(below).tier == "core" and snapshot.inspect(below).prekeys < snapshot.inspect(peers).prekeys


def test_core_tier_keeps_the_lowest_prekeys_and_the_id_high_water_mark(used, tmp_path, no_fence):
    text = snapshot.pack(used.session_dir, tier="core")
    snapshot.unpack(text, str(tmp_path / "restored"))
    conn = sqlite3.connect(str(tmp_path / "restored" / wadb.DB_NAME))
    ids = [r[0] for r in conn.execute("SELECT key_id FROM whatsmeow_pre_keys ORDER BY key_id")]
    conn.close()
    kept = len(ids) - 1
    assert kept >= snapshot.PREKEY_FLOOR
    assert ids == used.prekey_ids[:kept] + [max(used.prekey_ids)]


def test_login_tier_is_device_only_but_keeps_every_table(used, tmp_path, no_fence):
    text = snapshot.pack(used.session_dir, tier="login")
    dest = tmp_path / "restored"
    snapshot.unpack(text, str(dest))
    rows = table_rows(dest / wadb.DB_NAME)
    nonempty = {t for t, r in rows.items() if r}
    assert nonempty == {"whatsmeow_version", "whatsmeow_device", "whatsmeow_nct_salt", "whatsmeow_pre_keys"}
    assert [r[1] for r in rows["whatsmeow_pre_keys"]] == [max(used.prekey_ids)]
    assert schema_sql(dest / wadb.DB_NAME) == schema_sql(used.db_path)


def test_full_tier_round_trip_keeps_every_row(used, tmp_path, no_fence):
    text = snapshot.pack(used.session_dir, budget=10**9, tier="full")
    dest = tmp_path / "restored"
    snapshot.unpack(text, str(dest))
    assert table_rows(dest / wadb.DB_NAME) == table_rows(used.db_path)


def test_over_budget_names_every_tier_size_and_writes_nothing(used, tmp_path):
    before = tree_state(tmp_path)
    with pytest.raises(SnapshotTooLarge) as err:
        snapshot.pack(used.session_dir, budget=1000)
    assert err.value.budget == 1000
    assert list(err.value.sizes) == list(snapshot.AUTO_TIERS)  # the tiers a save may pick
    assert all(n > 1000 for n in err.value.sizes.values())
    assert f"{err.value.sizes['login']:,}" in str(err.value) and "1,000" in str(err.value)
    assert tree_state(tmp_path) == before


def test_forced_tier_over_budget_raises(used):
    with pytest.raises(SnapshotTooLarge) as err:
        snapshot.pack(used.session_dir, budget=16384, tier="full")
    assert list(err.value.sizes) == ["full"] and err.value.sizes["full"] > 16384


@pytest.mark.parametrize("make", ["missing", "no-device", "bad-tier"])
def test_pack_refuses_without_a_logged_in_device(make, tmp_path, fresh):
    target = tmp_path / "empty-session"
    target.mkdir()
    if make == "no-device":
        shutil.copyfile(wadb.template_db(), target / wadb.DB_NAME)
    if make == "bad-tier":
        target = fresh.session_dir
    before = tree_state(tmp_path)
    with pytest.raises(SnapshotError) as err:
        snapshot.pack(str(target), tier="everything" if make == "bad-tier" else None)
    assert {"missing": "no session database", "no-device": "no logged-in device",
            "bad-tier": "unknown tier"}[make] in str(err.value)
    assert tree_state(tmp_path) == before


def test_big_account_default_fits_the_budget(big):
    text = snapshot.pack(big.session_dir)
    assert len(text) <= snapshot.DEFAULT_BUDGET
    info = snapshot.inspect(text)
    assert info.device_jid == big.jid and info.tier == "core"


# ------------------------------------------------------------------------------- round trip


def test_round_trip_neonize_reads_the_same_device_and_keys(used, tmp_path):
    text = snapshot.pack(used.session_dir)
    dest = tmp_path / "restored"
    info = snapshot.unpack(text, str(dest))
    assert info.device_jid == used.jid
    assert os.listdir(dest) == [wadb.DB_NAME]  # no -journal/-wal/-shm left behind
    db = str(dest / wadb.DB_NAME)
    assert wadb.device_keys(db) == wadb.device_keys(used.db_path)
    before, after = wadb.neonize_devices(used.db_path), wadb.neonize_devices(db)
    assert after == before and len(after) == 1
    assert after[0]["user"].startswith(used.jid.split(":")[0])
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA page_size").fetchone()[0] == snapshot.RESTORED_PAGE_SIZE
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()
    assert snapshot.has_valid_session(str(dest)) and snapshot.device_jid(str(dest)) == used.jid


def test_unpack_replaces_an_older_session_and_leaves_no_temp_dirs(fresh, tmp_path):
    other = wadb.make_session(str(tmp_path / "other"), "fresh", seed=99)
    snapshot.unpack(snapshot.pack(other.session_dir), fresh.session_dir)
    assert snapshot.device_jid(fresh.session_dir) == other.jid
    assert sorted(os.listdir(tmp_path)) == ["other", "session"]


def test_interrupted_swap_is_finished_on_next_look(fresh, tmp_path):
    # What a crash between the two renames of the fallback swap leaves behind.
    os.rename(fresh.session_dir, tmp_path / ".session.snapshot-old")
    assert snapshot.has_valid_session(fresh.session_dir)
    assert sorted(os.listdir(tmp_path)) == ["session"]


def test_swap_without_rename_exchange_still_replaces_the_session(fresh, tmp_path, monkeypatch):
    monkeypatch.setattr(fsutil, "_exchange", lambda a, b: False)  # e.g. a filesystem without it
    other = wadb.make_session(str(tmp_path / "other"), "fresh", seed=42)
    snapshot.unpack(snapshot.pack(other.session_dir), fresh.session_dir)
    assert snapshot.device_jid(fresh.session_dir) == other.jid
    assert sorted(os.listdir(tmp_path)) == ["other", "session"]


def test_repacking_a_restored_session_gives_the_same_text(used, tmp_path, no_fence):
    text = snapshot.pack(used.session_dir)
    snapshot.unpack(text, str(tmp_path / "restored"))
    assert snapshot.pack(str(tmp_path / "restored")) == text


def test_pack_reads_committed_rows_of_a_live_wal_database(used, tmp_path):
    writer = sqlite3.connect(used.db_path, isolation_level=None)
    try:
        assert writer.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        writer.execute("UPDATE whatsmeow_device SET push_name = 'committed to the WAL'")
        writer.execute("BEGIN")
        writer.execute("UPDATE whatsmeow_device SET push_name = 'not committed'")
        text = snapshot.pack(used.session_dir)
        writer.execute("ROLLBACK")
    finally:
        writer.close()
    assert [m[0] for m in members_of(text)] == [wadb.DB_NAME]
    snapshot.unpack(text, str(tmp_path / "restored"))
    conn = sqlite3.connect(tmp_path / "restored" / wadb.DB_NAME)
    assert conn.execute("SELECT push_name FROM whatsmeow_device").fetchone()[0] == "committed to the WAL"
    conn.close()


def test_inspect_never_shows_key_material(used):
    text = snapshot.pack(used.session_dir)
    dumped = json.dumps(snapshot.inspect(text).as_dict())
    for value in used.keys.values():
        for form in (value.hex(), value.hex().upper(), base64.b64encode(value).decode()):
            assert form not in dumped
    info = json.loads(dumped)
    assert info["prekeys"] > snapshot.PREKEY_FLOOR and info["max_prekey_id"] == max(used.prekey_ids)
    assert info["paired_at"].startswith("20") and info["schema_version"] == 15
    assert info["raw_bytes"] > info["compressed_bytes"] and info["encoded_chars"] == len(text)


# ------------------------------------------------------------------------------- determinism


def test_same_content_gives_the_same_bytes(used, tmp_path):
    first = snapshot.pack(used.session_dir, budget=10**9, tier="full")
    assert snapshot.pack(used.session_dir, budget=10**9, tier="full") == first
    # Same content, different history: rows deleted and re-inserted get new rowids and pages.
    conn = sqlite3.connect(used.db_path)
    with conn:
        rows = conn.execute("SELECT * FROM whatsmeow_contacts").fetchall()
        conn.execute("INSERT INTO whatsmeow_contacts (our_jid, their_jid) VALUES (?, 'x@s.whatsapp.net')",
                      (used.jid,))
        conn.execute("DELETE FROM whatsmeow_contacts")
        conn.executemany("INSERT INTO whatsmeow_contacts VALUES (?,?,?,?,?,?,?)", list(reversed(rows)))
    conn.close()
    assert snapshot.pack(used.session_dir, budget=10**9, tier="full") == first
    assert all(m[2:] == (0, 0, 0) for m in members_of(first))
    assert base64.b64decode(first)[4:8] == b"\x00\x00\x00\x00"  # gzip mtime


def test_snapshot_holds_only_the_database(used):
    names = [m[0] for m in members_of(snapshot.pack(used.session_dir))]
    assert names == [wadb.DB_NAME]


# ------------------------------------------------------------------------------- plain shell interop


def shell(cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, check=True, **kw)


@pytest.mark.parametrize("encoder", ["base64 -w0", "base64", "base64 | sed 's/^/  /'"])
def test_unpack_accepts_plain_shell_snapshots(encoder, used, tmp_path, no_fence):
    text = shell(f"tar czf - -C {used.session_dir} . | {encoder}").stdout.decode()
    info = snapshot.unpack("\n\n " + text + " \n", str(tmp_path / "restored"))
    assert info.format == "plain tar" and info.tier is None
    assert info.created_at is not None  # plain tar keeps the file's mtime
    assert table_rows(tmp_path / "restored" / wadb.DB_NAME) == table_rows(used.db_path)


def test_plain_snapshot_of_a_live_wal_database_keeps_committed_writes(used, tmp_path):
    writer = sqlite3.connect(used.db_path, isolation_level=None)
    try:
        assert writer.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        writer.execute("UPDATE whatsmeow_device SET push_name = 'only in the WAL'")
        assert os.path.getsize(used.db_path + "-wal") > 0
        text = shell(f"tar czf - -C {used.session_dir} . | base64 -w0").stdout.decode()
    finally:
        writer.close()
    assert snapshot.inspect(text).device_jid == used.jid
    dest = tmp_path / "restored"
    snapshot.unpack(text, str(dest))
    assert os.listdir(dest) == [wadb.DB_NAME]
    conn = sqlite3.connect(dest / wadb.DB_NAME)
    assert conn.execute("SELECT push_name FROM whatsmeow_device").fetchone()[0] == "only in the WAL"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_our_snapshot_extracts_with_system_tools_into_a_session_neonize_opens(used, tmp_path):
    text = snapshot.pack(used.session_dir)
    dest = tmp_path / "by-hand"
    dest.mkdir()
    shell(f"base64 -d | tar xzf - -C {dest}", input=text.encode())
    assert os.listdir(dest) == [wadb.DB_NAME]
    db = str(dest / wadb.DB_NAME)
    assert wadb.device_keys(db) == wadb.device_keys(used.db_path)
    assert wadb.neonize_devices(db) == wadb.neonize_devices(used.db_path)
    assert oct(os.stat(db).st_mode & 0o777) == "0o600"


# ------------------------------------------------------------------------------- hostile input


def _cut(text):
    raw = base64.b64decode(text)
    return base64.b64encode(raw[: len(raw) // 2]).decode()


def _flip(text):
    raw = bytearray(base64.b64decode(text))
    for i in range(200, 260):
        raw[i] ^= 0x5A
    return base64.b64encode(bytes(raw)).decode()


def _bomb():
    """A tar.gz whose one file is larger than the cap, made without holding it in memory."""
    size = snapshot.MAX_UNCOMPRESSED_BYTES + 1024 * 1024
    info = tarfile.TarInfo(wadb.DB_NAME)
    info.size = size
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [comp.compress(info.tobuf(tarfile.GNU_FORMAT))]
    block = bytes(1 << 20)
    for _ in range(size // len(block)):
        parts.append(comp.compress(block))
    parts.append(comp.flush())
    return base64.b64encode(b"".join(parts)).decode()


def _zeros_after_archive():
    """A small valid tar followed by more zero padding than the cap allows."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("notes.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [comp.compress(buf.getvalue())]
    block = bytes(1 << 20)
    for _ in range(snapshot.MAX_UNCOMPRESSED_BYTES // len(block) + 2):
        parts.append(comp.compress(block))
    parts.append(comp.flush())
    return base64.b64encode(b"".join(parts)).decode()


def _sqlite_bytes(setup_sql: str) -> bytes:
    conn = sqlite3.connect(":memory:")
    conn.executescript(setup_sql)
    data = conn.serialize()
    conn.close()
    return data


def _corrupt_db(template: bytes) -> bytes:
    data = bytearray(template)
    page = 4096
    for off in range(2 * page, len(data), page):  # scribble over every B-tree page but the first
        data[off:off + 64] = b"\xee" * 64
    return bytes(data)


def _db_with(template_path):
    with open(template_path, "rb") as fh:
        return fh.read()


HOSTILE = {
    "not base64": (lambda s: "this is *not* base64 %%%", "not valid base64"),
    "empty": (lambda s: " \n\t ", "empty"),
    "truncated gzip": (lambda s: _cut(s), "truncated"),
    "corrupt gzip": (lambda s: _flip(s), "gzip"),
    "not gzip": (lambda s: base64.b64encode(b"hello world, not gzip").decode(), "not gzip"),
    "plain tar, not gzipped": (lambda s: b64_targz([reg("neonize.db", b"x")], gzip_it=False), "uncompressed tar"),
    "not a tar": (lambda s: base64.b64encode(_gzip(os.urandom(3000))).decode(), "not a valid tar"),
    "dot-dot member": (lambda s: b64_targz([reg("../escaped", b"x")]), "leaving the session"),
    "nested dot-dot": (lambda s: b64_targz([reg("./a/../../escaped", b"x")]), "leaving the session"),
    "absolute member": (lambda s: b64_targz([reg("/tmp/snapshot-absolute-test", b"x")]), "absolute path"),
    "symlink": (lambda s: b64_targz([special("neonize.db", tarfile.SYMTYPE, "/etc/passwd")]), "links"),
    "hard link": (lambda s: b64_targz([special("neonize.db", tarfile.LNKTYPE, "/etc/passwd")]), "links"),
    "char device": (lambda s: b64_targz([special("neonize.db", tarfile.CHRTYPE)]), "device files"),
    "fifo": (lambda s: b64_targz([special("neonize.db", tarfile.FIFOTYPE)]), "FIFO"),
    "decompression bomb": (lambda s: _bomb(), "decompression bomb"),
    "bomb after the archive": (lambda s: _zeros_after_archive(), "decompression bomb"),
    "too many members": (
        lambda s: b64_targz([reg(f"f{i}", b"") for i in range(snapshot.MAX_MEMBERS + 1)]), "entries"),
    "duplicate member": (lambda s: b64_targz([reg("neonize.db", b"a"), reg("./neonize.db", b"b")]), "twice"),
    "no database": (lambda s: b64_targz([reg("notes.txt", b"hello")]), "no neonize.db"),
    "database one level down": (
        lambda s: b64_targz([reg("session/neonize.db", b"x")]), "tar czf - -C SESSION_DIR ."),
    "not sqlite": (lambda s: b64_targz([reg("neonize.db", b"just some text, not a database")]),
                   "not an SQLite database"),
    "sqlite, not whatsmeow": (
        lambda s: b64_targz([reg("neonize.db", _sqlite_bytes("CREATE TABLE t(x); INSERT INTO t VALUES (1);"))]),
        "not a whatsmeow database"),
    "no device": (lambda s: b64_targz([reg("neonize.db", _db_with(wadb.template_db()))]), "no logged-in device"),
    "sqlite header, garbage body": (
        lambda s: b64_targz([reg("neonize.db", b"SQLite format 3\x00" + os.urandom(5000))]), "database"),
    "corrupt sqlite": (lambda s: b64_targz([reg("neonize.db", _corrupt_db(_db_with(s.db_path)))]), "database"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_input_is_rejected_and_nothing_changes(case, fresh, tmp_path):
    make, expected = HOSTILE[case]
    good = snapshot.pack(fresh.session_dir)
    if case == "corrupt sqlite":
        source = wadb.make_session(str(tmp_path / "src"), "50", seed=5)
        text = make(source)
        shutil.rmtree(source.session_dir)
    else:
        text = make(good)
    before_parent = tree_state(tmp_path)
    before_session = tree_state(fresh.session_dir)
    with pytest.raises(InvalidSnapshot) as err:
        snapshot.unpack(text, fresh.session_dir)
    assert expected in str(err.value)
    assert tree_state(fresh.session_dir) == before_session
    assert tree_state(tmp_path) == before_parent  # no temp dirs, no escaped files
    assert not os.path.exists("/tmp/snapshot-absolute-test")
    assert snapshot.device_jid(fresh.session_dir) == fresh.jid
    with pytest.raises(InvalidSnapshot):
        snapshot.inspect(text)


def test_error_text_never_echoes_the_snapshot(fresh):
    secret = base64.b64encode(b"\x00" * 30 + b"secretish-session-bytes").decode()
    with pytest.raises(InvalidSnapshot) as err:
        snapshot.unpack(secret + "!", fresh.session_dir)
    assert secret[:20] not in str(err.value)


# ------------------------------------------------------------------------------- local session checks


def test_has_valid_session_and_device_jid(fresh, tmp_path):
    assert snapshot.has_valid_session(fresh.session_dir)
    assert snapshot.device_jid(fresh.session_dir) == fresh.jid
    assert not snapshot.has_valid_session(str(tmp_path / "nowhere"))
    assert not os.path.exists(tmp_path / "nowhere")
    blank = tmp_path / "blank"
    blank.mkdir()
    shutil.copyfile(wadb.template_db(), blank / wadb.DB_NAME)
    assert not snapshot.has_valid_session(str(blank)) and snapshot.device_jid(str(blank)) is None
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / wadb.DB_NAME).write_bytes(b"garbage" * 100)
    assert not snapshot.has_valid_session(str(junk))


# ------------------------------------------------------------------------------- concurrency

_WRITER = textwrap.dedent("""
    import sqlite3, sys, time
    db, stop = sys.argv[1], sys.argv[2]
    conn = sqlite3.connect(db, timeout=5, isolation_level=None)
    n = conn.execute("SELECT MAX(key_id) FROM whatsmeow_pre_keys").fetchone()[0]
    jid = conn.execute("SELECT jid FROM whatsmeow_device").fetchone()[0]
    import os
    while not os.path.exists(stop):
        n += 1
        conn.execute("BEGIN IMMEDIATE")
        # One transaction: a new highest pre-key and the device's push name naming it, plus bulk
        # churn so each transaction spans many pages.
        conn.execute("INSERT INTO whatsmeow_pre_keys VALUES (?, ?, ?, 0)", (jid, n, os.urandom(32)))
        conn.execute("UPDATE whatsmeow_sessions SET session = randomblob(length(session))")
        conn.execute("UPDATE whatsmeow_device SET push_name = ?", (str(n),))
        conn.execute("COMMIT")
        print(n, flush=True)
""")


def test_pack_while_another_process_writes_gets_a_consistent_copy(used, tmp_path, no_fence):
    stop = tmp_path / "stop"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, used.db_path, str(stop)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = set()
        deadline = time.monotonic() + 30
        while len(seen) < 10 and time.monotonic() < deadline:
            text = snapshot.pack(used.session_dir, budget=10**9, tier="core")  # one encode, no search
            assert [m[0] for m in members_of(text)] == [wadb.DB_NAME]
            dest = tmp_path / "restored"
            snapshot.unpack(text, str(dest))
            conn = sqlite3.connect(dest / wadb.DB_NAME)
            top = conn.execute("SELECT MAX(key_id) FROM whatsmeow_pre_keys").fetchone()[0]
            name = conn.execute("SELECT push_name FROM whatsmeow_device").fetchone()[0]
            conn.close()
            if name != "Bot Owner":
                assert int(name) == top  # both halves of one transaction, never one without the other
                seen.add(top)
        # Each copy above was checked whole; here only that the writer moved while we packed (on a
        # loaded 2-core machine it may get far fewer than 30 commits in before the deadline).
        assert len(seen) >= 2, "the writer made no progress while we packed"
        assert proc.poll() is None, proc.stderr.read().decode()
    finally:
        stop.touch()
        try:
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, proc.stderr.read().decode()
    assert not [n for n in os.listdir(used.session_dir) if n != wadb.DB_NAME]  # we left no side files


# ------------------------------------------------------------------------------- CLI


def run_cli(*args, stdin=b""):
    """The one human CLI, `python session_manager.py` (pack, unpack, inspect; pg-export/pg-import)."""
    return subprocess.run([sys.executable, os.path.join(ROOT, "session_manager.py"), *args], input=stdin,
                          capture_output=True, cwd=ROOT, timeout=60)


def test_cli_pack_inspect_unpack(used, tmp_path):
    packed = run_cli("pack", used.session_dir)
    assert packed.returncode == 0, packed.stderr
    text = packed.stdout
    assert text == snapshot.pack(used.session_dir).encode()
    shown = run_cli("inspect", stdin=text)
    assert shown.returncode == 0 and json.loads(shown.stdout)["device_jid"] == used.jid
    restored = run_cli("unpack", str(tmp_path / "laptop"), stdin=text + b"\n")
    assert restored.returncode == 0, restored.stderr
    assert snapshot.device_jid(str(tmp_path / "laptop")) == used.jid
    forced = run_cli("pack", used.session_dir, "--tier", "login", "--budget", "20000")
    assert snapshot.inspect(forced.stdout.decode()).tier == "login"


def test_cli_too_large_has_its_own_exit_status_and_figures(used):
    result = run_cli("pack", used.session_dir, "--budget", "100")
    assert result.returncode == snapshot.EXIT_TOO_LARGE and result.stdout == b""
    message, figures = result.stderr.decode().strip().splitlines()
    assert message.startswith("error: ") and "does not fit" in message
    parsed = json.loads(figures)
    assert parsed["budget"] == 100 and parsed["sizes"] and all(n > 100 for n in parsed["sizes"].values())


@pytest.mark.parametrize("args,stdin,expected", [
    (("unpack", "{dir}"), b"garbage!", "not valid base64"),
    (("inspect",), b"", "empty"),
    (("pack", "{missing}"), b"", "no session database"),
])
def test_cli_errors_are_one_line_and_exit_1(args, stdin, expected, used, tmp_path):
    args = [a.format(dir=used.session_dir, missing=str(tmp_path / "missing")) for a in args]
    before = tree_state(used.session_dir)
    result = run_cli(*args, stdin=stdin)
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
    assert result.stdout == b""
    assert tree_state(used.session_dir) == before


# ------------------------------------------------------------------------------- hostile side files and schema

_JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")


def _journal_naming(victim) -> bytes:
    """A hot rollback journal whose super-journal field names `victim`: rolling it back makes SQLite
    delete that file (pager_delsuper)."""
    path = os.fsencode(victim)
    return (b"\x01" + bytes(511) + struct.pack(">I", 1) + path
            + struct.pack(">II", len(path), sum(path)) + _JOURNAL_MAGIC)


def _victim(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("any file the bot can write")
    return victim


class _FileStore:
    """The smallest store SnapshotSession needs at boot: the value of WHATSAPP_SESSION."""

    key = "WHATSAPP_SESSION"

    def __init__(self, text):
        self.text = text

    def load(self):
        return self.text


def _read(path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


@pytest.mark.parametrize("how", ["inspect", "unpack", "cli inspect", "cli unpack", "boot"])
def test_hot_journal_naming_an_outside_file_deletes_nothing(how, fresh, tmp_path):
    victim = _victim(tmp_path)
    text = b64_targz([reg("neonize.db", _read(fresh.db_path)),
                      reg("neonize.db-journal", _journal_naming(victim))])
    dest = tmp_path / "restored"
    if how == "inspect":
        assert snapshot.inspect(text).device_jid == fresh.jid
    elif how == "unpack":
        snapshot.unpack(text, str(dest))
    elif how == "boot":
        from snapshot_session import SnapshotSession

        manager = SnapshotSession(dest, _FileStore(text))  # decodes the stored value once, at restore
        assert manager.restore_on_boot() == "store"
    else:
        command = how.split()[1]
        result = subprocess.run([sys.executable, os.path.join(ROOT, "session_manager.py"), command,
                                 *([str(dest)] if command == "unpack" else [])],
                                input=text.encode(), capture_output=True, cwd=ROOT, timeout=60)
        assert result.returncode == 0, result.stderr
    assert victim.read_text() == "any file the bot can write"
    if dest.exists():
        assert os.listdir(dest) == [wadb.DB_NAME]  # the journal was not restored either


def test_describing_a_snapshot_opens_it_read_only_and_immutable(used, tmp_path, monkeypatch):
    opened = []
    real_connect = sqlite3.connect

    def recording_connect(database, *args, **kwargs):
        opened.append(str(database))
        return real_connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", recording_connect)
    with sqlite3.connect(used.db_path, isolation_level=None) as writer:
        writer.execute("PRAGMA journal_mode = WAL")
        writer.execute("PRAGMA wal_autocheckpoint = 0")
        writer.execute("UPDATE whatsmeow_device SET push_name = 'in the WAL'")
        plain = shell(f"tar czf - -C {used.session_dir} . | base64 -w0").stdout.decode()
    writer.close()
    for text in (snapshot.pack(used.session_dir), plain):
        opened.clear()
        assert snapshot.inspect(text).device_jid == used.jid
        assert opened and all("mode=ro" in uri and "immutable=1" in uri for uri in opened), opened


def _hostile_schema_db(source_db) -> bytes:
    """A copy of `source_db` with a trigger calling load_extension, a view, an extra table, index and
    column: none of it is neonize's."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "neonize.db")
        shutil.copyfile(source_db, path)
        conn = sqlite3.connect(path)
        conn.executescript("""
            CREATE TRIGGER evil AFTER INSERT ON whatsmeow_contacts
                BEGIN SELECT load_extension('/tmp/evil.so'); END;
            CREATE TRIGGER evil_device AFTER UPDATE ON whatsmeow_device
                BEGIN SELECT load_extension('/tmp/evil.so'); END;
            CREATE VIEW evil_view AS SELECT * FROM whatsmeow_device;
            CREATE TABLE evil_table (payload BLOB);
            INSERT INTO evil_table VALUES (x'00ff');
            CREATE INDEX evil_index ON whatsmeow_contacts (push_name);
            ALTER TABLE whatsmeow_device ADD COLUMN evil_column TEXT DEFAULT 'x';
        """)
        conn.close()
        return _read(path)


def test_restore_keeps_only_neonizes_own_schema(used, tmp_path, no_fence):
    text = b64_targz([reg("neonize.db", _hostile_schema_db(used.db_path))])
    dest = tmp_path / "restored"
    info = snapshot.unpack(text, str(dest))
    assert info.device_jid == used.jid
    restored = dest / wadb.DB_NAME
    assert schema_sql(restored) == schema_sql(wadb.template_db())  # no trigger, view, table, column
    assert table_rows(restored) == table_rows(used.db_path)  # every row of neonize's tables is kept
    assert wadb.device_keys(str(restored)) == wadb.device_keys(used.db_path)


def test_restore_refuses_another_whatsmeow_schema_version(used, tmp_path):
    conn = sqlite3.connect(used.db_path)
    with conn:
        conn.execute("UPDATE whatsmeow_version SET version = 99")
    conn.close()
    text = b64_targz([reg("neonize.db", _read(used.db_path))])
    with pytest.raises(InvalidSnapshot) as err:
        snapshot.unpack(text, str(tmp_path / "restored"))
    assert "v99" in str(err.value)
    assert not (tmp_path / "restored").exists()


def _session_with_control_characters(tmp_path):
    session = wadb.make_session(str(tmp_path / "odd"), "fresh", seed=13)
    jid = "4915\x1b[31m\n2000000:7@s.whatsapp.net"
    conn = sqlite3.connect(session.db_path)
    with conn:
        conn.execute("UPDATE whatsmeow_device SET jid = ?, push_name = ?, platform = ?",
                     (jid, "Bob\x1b]0;pwned\x07\r\nINFO fake line", "android\x1b[2J"))
    conn.close()
    return session, jid


def test_text_from_a_snapshot_is_printed_and_logged_escaped(tmp_path, caplog):
    session, jid = _session_with_control_characters(tmp_path)
    text = snapshot.pack(session.session_dir)
    assert snapshot.inspect(text).device_jid == jid  # the value itself is kept as is
    for command, args in (("unpack", [str(tmp_path / "cli")]), ("inspect", [])):
        result = run_cli(command, *args, stdin=text.encode())
        assert result.returncode == 0, result.stderr
        shown = result.stdout + result.stderr
        assert b"\x1b" not in shown and b"\r" not in shown and b"\x07" not in shown
        assert b"\\x1b" in shown or b"\\u001b" in shown  # escaped, still readable
    assert json.loads(result.stdout)["device_jid"] == jid
    restored = run_cli("unpack", str(tmp_path / "cli2"), stdin=text.encode())
    assert len(restored.stderr.decode().strip().splitlines()) == 1  # no line a JID could fake
    from snapshot_session import SnapshotSession

    caplog.set_level("INFO", logger="session")
    manager = SnapshotSession(tmp_path / "boot", _FileStore(text))
    assert manager.restore_on_boot() == "store"
    logged = [r.getMessage() for r in caplog.records if r.name == "session"]
    assert logged and not any("\x1b" in m or "\n" in m for m in logged), logged
    assert any("\\x1b" in m for m in logged)


_RSS_PROBE = textwrap.dedent("""
    import resource, subprocess, sys
    with open(sys.argv[1], "rb") as stdin:
        done = subprocess.run([sys.executable, "session_manager.py", "inspect"], stdin=stdin,
                              capture_output=True)
    print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    sys.stderr.write(done.stderr.decode()[-500:])
""")


def _big_input(path, megabytes: int):
    """About `megabytes` MB of snapshot text: base64 of a tar.gz whose database member is random
    bytes behind the SQLite magic (random data does not compress, so gzip ~= tar)."""
    size = megabytes * 1024 * 1024 * 3 // 4
    info = tarfile.TarInfo(wadb.DB_NAME)
    info.size = size
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)
    rng = random.Random(5)
    with open(path, "wb") as out:
        pending = comp.compress(info.tobuf(tarfile.GNU_FORMAT) + b"SQLite format 3\x00")
        left = size - 16
        while left > 0:
            block = rng.randbytes(min(left, 3 << 20))
            left -= len(block)
            pending += comp.compress(block)
            keep = len(pending) - len(pending) % 3
            out.write(base64.b64encode(pending[:keep]))
            pending = pending[keep:]
        pending += comp.compress(bytes(512 - size % 512) + bytes(1024)) + comp.flush()
        out.write(base64.b64encode(pending))


def test_memory_is_bounded_by_the_cap_not_by_the_input(tmp_path):
    big_input = tmp_path / "big.txt"
    _big_input(big_input, 100)
    assert os.path.getsize(big_input) >= 100 * 1024 * 1024
    probe = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(big_input)], capture_output=True,
                           cwd=ROOT, timeout=300)
    code, peak_kib = map(int, probe.stdout.split())
    assert code == 1, probe.stderr  # not a usable database, found after reading it all
    assert peak_kib < 150 * 1024, f"peak RSS {peak_kib // 1024} MiB for a 100 MB input"


def test_inspect_without_room_for_its_scratch_copy_is_a_snapshot_error(fresh, monkeypatch):
    text = snapshot.pack(fresh.session_dir)

    def no_room(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snapshot.tarreading, "stream_to_private", no_room)
    with pytest.raises(SnapshotError) as err:
        snapshot.inspect(text)
    assert "No space left" in str(err.value)
