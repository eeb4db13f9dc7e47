"""What the "core" tier carries besides the login: as many pre-keys and members' keys as the budget allows.

Order (the reasons are at PREKEY_FLOOR in format.py): the lowest unused pre-keys up to PREKEY_FLOOR,
then group members' sender keys most recently used first, then more pre-keys. Each step is a binary search over how many fit: the encoded
size grows with every row added (key material does not compress), so "fits" is monotonic.

"Most recently used" comes from our own table in the live database (snapshot/signaluse.py keeps it up to date
with triggers); peers it never saw (written before it existed, or restored and not used since) come
after those, in a fixed order, so the same database always gives the same snapshot.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Callable

from snapshot.fence import NOT_FENCE_SQL
from snapshot.format import PREKEY_FLOOR

USE_TABLE = "bot_signal_use"  # signaluse.py creates it; kind 'k' = a sender key (chat, sender)


@dataclasses.dataclass(frozen=True)
class Ranked:
    """Candidates in the order they are kept."""

    prekeys: tuple  # key ids of unused uploaded pre-keys, lowest first
    peers: tuple  # ('k', chat_id, sender_id): members' sender keys, most recently used first


@dataclasses.dataclass(frozen=True)
class Fill:
    """How many of the ranked candidates a snapshot keeps."""

    prekeys: tuple = ()
    peers: tuple = ()

    @classmethod
    def nothing(cls) -> "Fill":
        return cls()

    @classmethod
    def everything(cls, ranked: Ranked) -> "Fill":
        return cls(ranked.prekeys, ranked.peers)

    @classmethod
    def first(cls, ranked: Ranked, prekeys: int, peers: int) -> "Fill":
        return cls(ranked.prekeys[:prekeys], ranked.peers[:peers])

    def is_everything(self, ranked: Ranked) -> bool:
        return len(self.prekeys) == len(ranked.prekeys) and len(self.peers) == len(ranked.peers)

    def into_temp_tables(self, conn: sqlite3.Connection) -> None:
        """The temp tables format._FILLED's filters read (temp objects are never serialized)."""
        conn.execute("CREATE TEMP TABLE keep_prekeys (key_id INTEGER PRIMARY KEY)")
        conn.execute("CREATE TEMP TABLE keep_sender_keys (chat_id TEXT, sender_id TEXT, PRIMARY KEY (chat_id, sender_id))")
        conn.executemany("INSERT OR IGNORE INTO temp.keep_prekeys VALUES (?)", [(k,) for k in self.prekeys])
        conn.executemany("INSERT OR IGNORE INTO temp.keep_sender_keys VALUES (?, ?)",
                         [(p[1], p[2]) for p in self.peers if p[0] == "k"])


def ranking(conn: sqlite3.Connection) -> Ranked:
    """The candidates of a session database (the in-memory copy a pack reads)."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    prekeys = ()
    if "whatsmeow_pre_keys" in tables:
        # uploaded=false rows were never handed to the server: whatsmeow uploads them with its next batch.
        prekeys = tuple(r[0] for r in conn.execute(
            f"SELECT key_id FROM whatsmeow_pre_keys WHERE uploaded AND {NOT_FENCE_SQL} ORDER BY key_id"))
    peers = []
    if "whatsmeow_sender_keys" in tables:
        own = _own_users(conn)
        peers += [("k", r[0], r[1]) for r in conn.execute(
            "SELECT DISTINCT chat_id, sender_id FROM whatsmeow_sender_keys")
            if _user_of(r[1]) not in own]
    last_use = {}
    if USE_TABLE in tables:
        try:
            last_use = {(r[0], r[1], r[2]): r[3] for r in conn.execute(
                f"SELECT kind, k1, k2, rowid FROM {USE_TABLE}")}
        except sqlite3.Error:
            last_use = {}  # not ours after all (a hand-made table): no recency, still a snapshot
    peers.sort(key=lambda p: (-last_use.get(p, 0), p))
    return Ranked(prekeys, tuple(peers))


def _user_of(address: str) -> str:
    """The user part of a Signal address or JID: "123_1.5", "123:5@lid", "123@s.whatsapp.net" -> "123"."""
    for mark in ("_", ":", ".", "@"):
        address = address.split(mark, 1)[0]
    return address


def _own_users(conn: sqlite3.Connection) -> set:
    """Our own phone number and LID users: our own sender keys are never kept (format.py)."""
    own = set()
    for jid, lid in conn.execute("SELECT jid, lid FROM whatsmeow_device"):
        own |= {_user_of(x) for x in (jid, lid) if x}
    return own


Encoder = Callable[[Fill, int], "str | None"]  # (what to keep, size limit) -> text, or None when over


def fill_core(encode: Encoder, ranked: Ranked, budget: int) -> tuple[str, Fill] | None:
    """The fullest "core" snapshot within `budget` and what it keeps, or None when not even the
    login with the tier's fixed rows fits."""
    best = {}

    def fits(fill: Fill) -> bool:
        text = encode(fill, budget)
        if text is not None:
            best[fill] = text
        return text is not None

    def most(low: int, high: int, make: Callable[[int], Fill]) -> int:
        """The largest n in [low, high] with make(n) fitting; make(low) is known to fit."""
        while low < high:
            mid = (low + high + 1) // 2
            if fits(make(mid)):
                low = mid
            else:
                high = mid - 1
        return low

    if fits(Fill.everything(ranked)):  # a generous budget: one encode instead of three searches
        return best[Fill.everything(ranked)], Fill.everything(ranked)
    if not fits(Fill.nothing()):
        return None
    all_keys, all_peers = len(ranked.prekeys), len(ranked.peers)
    keys = most(0, min(PREKEY_FLOOR, all_keys), lambda n: Fill.first(ranked, n, 0))
    peers = most(0, all_peers, lambda n: Fill.first(ranked, keys, n)) if keys >= min(PREKEY_FLOOR, all_keys) else 0
    keys = most(keys, all_keys, lambda n: Fill.first(ranked, n, peers))
    chosen = Fill.first(ranked, keys, peers)
    if chosen not in best:
        fits(chosen)
    return best[chosen], chosen
