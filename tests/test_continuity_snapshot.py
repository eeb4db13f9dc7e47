"""Issue 20, the snapshot side: what a snapshot carries so conversations survive a restore.

On databases made by neonize itself (tests/support/wadb.py): the lowest unused pre-keys to the budget,
peers' sessions most recently used first (recorded by snapshot/signaluse.py's triggers, fired by the very
statements whatsmeow runs), the pre-key id fence a restore sets (snapshot/fence.py), and the look that
finds a pre-key batch (prekeywatch.py through the snapshot child)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from snapshot import signaluse
import snapshot
import snapshot.fence
from prekeywatch import PREKEY_BATCH, PreKeyWatch
from snapshot.fill import USE_TABLE
from tests.support import wadb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# whatsmeow store/sqlstore/store.go, verbatim: the statements that fire our triggers.
PUT_SESSION = ("INSERT INTO whatsmeow_sessions (our_jid, their_id, session) VALUES ($1, $2, $3)"
               " ON CONFLICT (our_jid, their_id) DO UPDATE SET session=excluded.session")
PUT_SENDER_KEY = ("INSERT INTO whatsmeow_sender_keys (our_jid, chat_id, sender_id, sender_key) VALUES ($1, $2, $3, $4)"
                  " ON CONFLICT (our_jid, chat_id, sender_id) DO UPDATE SET sender_key=excluded.sender_key")
# getNextPreKeyID + genOnePreKey, as GenOnePreKey runs them.
NEXT_PREKEY_ID = "SELECT MAX(key_id) FROM whatsmeow_pre_keys WHERE jid=$1"
INSERT_PREKEY = "INSERT INTO whatsmeow_pre_keys (jid, key_id, key, uploaded) VALUES ($1, $2, $3, $4)"


def sqlite_params(sql: str) -> str:
    return sql.replace("$1", "?1").replace("$2", "?2").replace("$3", "?3").replace("$4", "?4")


@pytest.fixture
def used(tmp_path):
    return wadb.make_session(str(tmp_path / "session"), "500", seed=5)


@pytest.fixture
def fresh(tmp_path):
    return wadb.make_session(str(tmp_path / "session"), "fresh", seed=8)


def restored_rows(text: str, dest, table: str, column: str) -> list:
    snapshot.unpack(text, str(dest))
    conn = sqlite3.connect(os.path.join(dest, wadb.DB_NAME))
    try:
        return [r[0] for r in conn.execute(f"SELECT {column} FROM {table} ORDER BY {column}")]
    finally:
        conn.close()


def mint_prekey(db_path: str, jid: str, uploaded: bool = True) -> int:
    """What whatsmeow's GenOnePreKey does to the table: the next id is MAX+1."""
    conn = sqlite3.connect(db_path)
    with conn:
        top = conn.execute(sqlite_params(NEXT_PREKEY_ID), (jid,)).fetchone()[0] or 0
        conn.execute(sqlite_params(INSERT_PREKEY), (jid, top + 1, os.urandom(32), uploaded))
    conn.close()
    return top + 1


# ------------------------------------------------------------------------------- pre-keys


@pytest.mark.parametrize("share, at_least", [(25, snapshot.PREKEY_FLOOR), (50, 400)])
def test_a_fresh_pairing_carries_the_lowest_prekeys_the_share_allows(fresh, tmp_path, share, at_least, monkeypatch):
    monkeypatch.setattr(snapshot.fence, "FENCE_EPOCH", 2**40)  # no fence: compare ids as packed
    budget = snapshot.DEFAULT_BUDGET * share // 25
    text = snapshot.pack(fresh.session_dir, budget=budget)
    assert len(text) <= budget
    ids = restored_rows(text, tmp_path / "restored", "whatsmeow_pre_keys", "key_id")
    kept = ids[:-1]
    assert len(kept) >= at_least
    assert kept == fresh.prekey_ids[:len(kept)]  # the lowest, none skipped
    assert ids[-1] == max(fresh.prekey_ids)  # and the highest id, whatever the budget
    assert snapshot.inspect(text).prekeys == len(ids)


def test_without_room_for_the_floor_the_snapshot_still_logs_in(fresh):
    text = snapshot.pack(fresh.session_dir, budget=6000)
    info = snapshot.inspect(text)
    assert info.tier == "core" and 1 < info.prekeys < snapshot.PREKEY_FLOOR


# ------------------------------------------------------------------------------- peers


def test_members_sender_keys_ride_along_most_recently_used_first(used, tmp_path):
    conn = sqlite3.connect(used.db_path)
    assert signaluse.install(conn)
    keys = [r for r in conn.execute("SELECT chat_id, sender_id FROM whatsmeow_sender_keys"
                                     " ORDER BY chat_id DESC, sender_id DESC")]
    own = used.lid.split(":")[0]
    theirs = [k for k in keys if not k[1].startswith(own)]
    recent = theirs[:3]  # the last in a fixed order: without the triggers they would come last
    for _ in range(2):  # two group messages each: whatsmeow's upsert of a row the triggers already saw
        with conn:
            for chat, sender in recent:
                conn.execute(sqlite_params(PUT_SENDER_KEY), (used.jid, chat, sender, os.urandom(300)))
    conn.close()
    text = snapshot.pack(used.session_dir, budget=snapshot.DEFAULT_BUDGET + 2000)  # room for a few
    snapshot.unpack(text, str(tmp_path / "restored"))
    conn = sqlite3.connect(tmp_path / "restored" / wadb.DB_NAME)
    kept = set(conn.execute("SELECT chat_id, sender_id FROM whatsmeow_sender_keys").fetchall())
    sessions = conn.execute("SELECT COUNT(*) FROM whatsmeow_sessions").fetchone()[0]
    conn.close()
    assert set(recent) <= kept, "the members heard from last are kept first"
    assert not any(sender.startswith(own) for _, sender in kept), "never our own sender key"
    assert sessions == 0, "a 1:1 session is never restored (a stale sending chain loses the bot's messages)"
    assert snapshot.inspect(text).prekeys > snapshot.PREKEY_FLOOR


def test_without_the_triggers_the_order_is_fixed(used):
    assert snapshot.pack(used.session_dir) == snapshot.pack(used.session_dir)


def test_the_triggers_record_sender_keys_and_are_never_packed(used, tmp_path):
    conn = sqlite3.connect(used.db_path)
    assert signaluse.install(conn) and signaluse.install(conn)  # idempotent
    with conn:
        conn.execute(sqlite_params(PUT_SENDER_KEY), (used.jid, "120363000000000001@g.us", "1_1.0", os.urandom(200)))
        conn.execute(sqlite_params(PUT_SENDER_KEY), (used.jid, "120363000000000002@g.us", "2_1.0", os.urandom(200)))
        conn.execute(sqlite_params(PUT_SENDER_KEY), (used.jid, "120363000000000001@g.us", "1_1.0", os.urandom(200)))
        conn.execute(sqlite_params(PUT_SESSION), (used.jid, "999_1.0", os.urandom(200)))  # not tracked
    order = [r[:2] for r in conn.execute(f"SELECT kind, k1 FROM {USE_TABLE} ORDER BY rowid")]
    conn.close()
    assert order == [("k", "120363000000000002@g.us"), ("k", "120363000000000001@g.us")]  # the latest use last
    text = snapshot.pack(used.session_dir, budget=10**9, tier="full")
    dest = tmp_path / "restored"
    snapshot.unpack(text, str(dest))
    conn = sqlite3.connect(dest / wadb.DB_NAME)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert not {n for n in names if n.startswith("bot_")}


# ------------------------------------------------------------------------------- the id fence


def test_each_restore_mints_ids_no_earlier_restore_of_the_same_snapshot_minted(fresh, tmp_path, monkeypatch):
    text = snapshot.pack(fresh.session_dir)
    minted = {}  # id -> key material, over every boot
    now = 1_800_000_000.0
    for boot in range(4):
        monkeypatch.setattr(snapshot.fence.time, "time", lambda: now)
        dest = tmp_path / f"boot{boot}"
        snapshot.unpack(text, str(dest))
        db = str(dest / wadb.DB_NAME)
        for _ in range(boot + 1):  # each boot sends retry receipts with keys (GenOnePreKey), then is lost
            kid = mint_prekey(db, fresh.jid)
            assert kid not in minted, f"boot {boot} minted id {kid} again"
            minted[kid] = True
        now += snapshot.fence.FENCE_SECONDS * 5  # the next restart, a few minutes later
    assert min(minted) > max(fresh.prekey_ids)


def test_without_the_fence_a_second_restore_reuses_the_ids(fresh, tmp_path, monkeypatch):
    """What the fence prevents (whatsmeow's own rule, MAX+1, on the same snapshot twice)."""
    monkeypatch.setattr(snapshot.fence, "FENCE_EPOCH", 2**40)
    text = snapshot.pack(fresh.session_dir)
    firsts = []
    for boot in range(2):
        snapshot.unpack(text, str(tmp_path / f"boot{boot}"))
        firsts.append(mint_prekey(str(tmp_path / f"boot{boot}" / wadb.DB_NAME), fresh.jid))
    assert firsts[0] == firsts[1]


def test_the_fence_row_is_never_handed_out_and_stays_under_24_bits(fresh, tmp_path):
    info = snapshot.unpack(snapshot.pack(fresh.session_dir), str(tmp_path / "restored"))
    conn = sqlite3.connect(tmp_path / "restored" / wadb.DB_NAME)
    top, uploaded = conn.execute("SELECT key_id, uploaded FROM whatsmeow_pre_keys ORDER BY key_id DESC").fetchone()
    conn.close()
    assert uploaded == 1  # GetOrGenPreKeys uploads only uploaded=false rows
    assert top == info.max_prekey_id == snapshot.fence.clock_id(__import__("time").time())
    assert max(fresh.prekey_ids) < top < snapshot.fence.MAX_FENCE < snapshot.fence.MAX_PREKEY_ID


# ------------------------------------------------------------------------------- the batch look


class _Session:
    """What PreKeyWatch needs of a SnapshotSession, with the real snapshot child."""

    def __init__(self, session_dir, stored):
        from pathlib import Path

        self.session_dir = Path(session_dir)
        self.stored = stored
        self.saves = []

    def stored_prekeys(self):
        return self.stored

    def _snapshot_child(self, *args, timeout):
        proc = subprocess.run([sys.executable, "-m", "snapshot.child", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def save(self, **kw):
        self.saves.append(kw)
        return {}


def test_a_new_batch_is_saved_once_and_single_retry_keys_are_not(fresh):
    stored = (max(fresh.prekey_ids), len(fresh.prekey_ids))
    session = _Session(fresh.session_dir, stored)
    watch = PreKeyWatch(session, interval=3600)
    assert watch.check() is False and watch.tracking  # the first look installs the triggers
    for _ in range(PREKEY_BATCH - 1):  # retry receipts, one key each
        mint_prekey(fresh.db_path, fresh.jid)
    assert watch.check() is False and session.saves == []
    mint_prekey(fresh.db_path, fresh.jid)  # the 50th: as many as a batch (prekeys.go WantedPreKeyCount)
    assert watch.check() is True
    assert session.saves == [{"reason": "new pre-key batch", "wait": None}]
    session.stored = (max(fresh.prekey_ids) + PREKEY_BATCH, stored[1] + PREKEY_BATCH)  # what the save stored
    assert watch.check() is False and len(session.saves) == 1


def test_the_initial_upload_marked_after_the_pairing_save_is_saved(fresh):
    session = _Session(fresh.session_dir, (max(fresh.prekey_ids), 0))  # saved while uploaded=false
    assert PreKeyWatch(session, interval=3600).check() is True
