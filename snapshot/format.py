"""The snapshot format and its tiers: what a snapshot is, what each tier keeps, and its errors.

A snapshot is base64 (one line) of a gzip'd tar holding `neonize.db`, the whatsmeow SQLite
database of the session, cut down to a *tier* and compacted. The format and tier are recorded as a
small JSON text in the gzip header's comment field (RFC 1952 FCOMMENT): it costs ~50 bytes instead of
a ~150-byte tar member, and it never lands in a session directory, so a directory extracted with
plain tar and later re-snapshotted by hand cannot carry a stale "tier" claim. Plain
`base64 -d | tar xz` gives a directory neonize opens as is, and snapshots made by the plain shell
(`tar czf - -C session . | base64 -w0`) are accepted by `unpack` too.

A snapshot is untrusted input: reading one is unpacking.py's job.

Why tiers: a used account's database is megabytes, mostly Signal ratchets and caches, while all
config vars of a Heroku app share 64 KB. Each tier drops what whatsmeow can refetch, rebuild or
recover from peers; the smallest one still logs in as the same device. See `_TABLE_RULES`.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import pathlib

from config import CONFIG_VARS_LIMIT
from errors import BotError
from snapshot.fence import NOT_FENCE_SQL

DB_NAME = "neonize.db"
FORMAT_ID = "neonize-session-snapshot/1"

# The CLI's default size: a quarter of Heroku's config-var limit, what a save aims for too
# (stores.Budget: the rest stays free for the owner's own config vars).
DEFAULT_BUDGET = CONFIG_VARS_LIMIT // 4

# Small pages: each of whatsmeow's ~36 B-trees (17 tables and their key indexes) costs at least one
# page, mostly empty. Measured on the "core" tier, 1024 compresses ~2% better than 512 (less
# overflow chaining of the schema text) and ~7% better than 4096. `unpack` restores the rows into a
# database neonize made, so the restored one has neonize's normal 4096-byte pages again.
PACK_PAGE_SIZE = 1024
RESTORED_PAGE_SIZE = 4096

# Decompression-bomb caps. gzip can expand ~1000:1, so a 64 KB config var could claim ~64 MB; our
# 3000-contact profile is ~7 MB raw. 128 MiB leaves room for a heavy account's plain snapshot moved
# from a laptop while bounding the scratch copy on disk; memory does not grow with it (decoding
# streams: a piece of text, a gzip window and a tar block at a time) on a 512 MB dyno.
MAX_UNCOMPRESSED_BYTES = 128 * 1024 * 1024
# A session directory holds the database and maybe its -wal/-shm/-journal. 256 entries allow odd
# extras while stopping a tar of millions of empty members from burning CPU.
MAX_MEMBERS = 256

# The "core" tier is filled to the budget (packing.py `_fill_core`) in this order:
# 1. up to PREKEY_FLOOR of the lowest unused one-time pre-keys. A new peer gets one of ours from the
#    server to start a session; without its private half the first message fails and costs TWO retry
#    rounds: retry.go `sendRetryReceipt` adds a fresh pre-key to a receipt only from the second retry on
#    (`retryCount > 1`), so the peer's first re-send on the same broken session fails again. One key is
#    ~66 characters (32 random bytes, its row and index entry).
# 2. then group members' sender keys, most recently used first (a member's group message without it
#    costs one round: whatsmeow sends keys with the first receipt then). Only incoming ones: our own
#    sender key and the 1:1 Signal sessions are never restored, because a restored copy is stale as soon
#    as the bot sent anything after the save, and sending from a stale ratchet reuses message counters
#    that the peer already saw: whatsmeow drops those without a retry (message.go: ErrOldCounter is
#    ignored), so the bot's own message would be lost. Measured on the simulator (test_continuity):
#    with sessions restored, a group member could not read the bot's next message ("old counter").
#    Without them, whatsmeow fetches a fresh bundle and sends a pkmsg: it always arrives, and an
#    established peer's next message costs two retry rounds instead (README "How the session fits").
# 3. then more pre-keys with what is left (the 151st new peer since the last save is rare for one bot).
# 150 keeps a fresh pairing within a quarter of the config-var limit (measured: bench_snapshot.py).
PREKEY_FLOOR = 150

TIERS = ("full", "crypto", "peers", "core", "login")
# The tiers a save may pick by itself: "crypto" and "full" carry Signal sessions (see _TABLE_RULES), so
# only `pack --tier` (moving a stopped session by hand) makes them.
AUTO_TIERS = ("peers", "core", "login")

SQLITE_MAGIC = b"SQLite format 3\x00"


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
# The fence row a restore adds (fence.py) is never packed: the next restore sets its own.
_MAX_PREKEY = (f"t.{NOT_FENCE_SQL} AND t.key_id = (SELECT MAX(p.key_id) FROM src.whatsmeow_pre_keys p"
               f" WHERE p.jid = t.jid AND p.{NOT_FENCE_SQL})")
_NOT_FENCE = f"t.{NOT_FENCE_SQL}"
_UPLOADED_PREKEYS = f"(t.uploaded AND t.{NOT_FENCE_SQL}) OR {_MAX_PREKEY}"
# The filled tier keeps the pre-keys, sessions, sender keys and identities packing.py chose; it puts
# them in these temp tables of the connection that builds the tier (never part of the snapshot).
FILL = "fill"
_FILLED = {
    "whatsmeow_pre_keys": f"t.key_id IN (SELECT key_id FROM temp.keep_prekeys) OR {_MAX_PREKEY}",
    "whatsmeow_sender_keys": "(t.chat_id, t.sender_id) IN (SELECT chat_id, sender_id FROM temp.keep_sender_keys)",
}

#                                        full crypto peers  core   login
_TABLE_RULES = {
    # Schema version: without it neonize would re-run every migration over existing tables.
    "whatsmeow_version":                 (ALL, ALL, ALL, ALL, ALL),
    # The login itself: JID, noise/identity/signed pre-key, ADV signatures. Never dropped.
    "whatsmeow_device":                  (ALL, ALL, ALL, ALL, ALL),
    # Salt for cstokens (cstoken.go); 32 bytes, only re-sent by the phone via app state.
    "whatsmeow_nct_salt":                (ALL, ALL, ALL, ALL, ALL),
    "whatsmeow_pre_keys":                (_NOT_FENCE, _NOT_FENCE, _UPLOADED_PREKEYS, FILL, _MAX_PREKEY),
    # Keys that decrypt app-state patches. A few dozen small rows; without them whatsmeow must ask
    # the phone again (works only while the phone is online), so kept down to "core".
    "whatsmeow_app_state_sync_keys":     (ALL, ALL, ALL, ALL, NONE),
    # Per-peer trust and addressing, ~60 bytes per contact: identity keys (trust on first use,
    # re-learned from the next message), privacy tokens (sent with 1:1 messages; re-issued by
    # peers), LID<->phone map (refetched through usync when missing).
    "whatsmeow_identity_keys":           (ALL, ALL, ALL, NONE, NONE),
    "whatsmeow_privacy_tokens":          (ALL, ALL, ALL, NONE, NONE),
    "whatsmeow_lid_map":                 (ALL, ALL, ALL, NONE, NONE),
    # Signal ratchets, the bulk of a used account (~1 KB per peer device). A restored copy is stale as
    # soon as the bot sent anything after the save, and a stale sending chain reuses counters the peer
    # drops (see PREKEY_FLOOR): never in the tiers a save picks by itself (AUTO_TIERS). Members' sender
    # keys only decrypt, so "core" keeps the most recently used ones the budget allows (FILL, never our
    # own: whatsmeow makes a new one and hands it out with the next group send).
    "whatsmeow_sessions":                (ALL, ALL, NONE, NONE, NONE),
    "whatsmeow_sender_keys":             (ALL, ALL, FILL, FILL, NONE),
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


def row_filter(table: str, tier: str):
    rule = _TABLE_RULES.get(table, _UNKNOWN_TABLE_RULE)[TIERS.index(tier)]
    return _FILLED[table] if rule == FILL else rule


# Our own objects in the live database (snapshot/signaluse.py: which peer's keys were used last). They only
# steer packing and are never packed: a restore keeps neonize's schema only.
OWN_PREFIX = "bot_"



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
    max_prekey_id: int | None  # whatsmeow mints the next pre-key id above it (prekey_fence.py)
    schema_version: int | None
    paired_at: str | None  # from the device's ADV identity (when the phone linked it)
    stop_saved_at: int | None  # Unix seconds of the save at a dyno's stop that made it (stopsave.py)
    created_at: str | None  # the database member's mtime; ours are zeroed for determinism
    rows: dict  # row counts of the tables that say how "full" the session is
    # Members of the snapshot that were not read (-journal, -shm, other files), printable names.
    ignored_members: list = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# Exit status of the CLI for SnapshotTooLarge, so a caller running it as a subprocess can tell it apart
# (argparse uses 2 for usage errors).
EXIT_TOO_LARGE = 3


FCOMMENT = 0x10
MAX_COMMENT = 1024


def gzip_comment(data: bytes) -> bytes | None:
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
        if flags & FCOMMENT:
            end = data.index(b"\x00", pos, pos + MAX_COMMENT)
            return data[pos:end]
    except ValueError:
        return None
    return None


def content_of(text: str | None) -> bytes | str | None:
    """What "the same snapshot" compares: for ours the compressed database without the manifest (a
    stop stamp changes only that), for anything else the text itself."""
    if not text:
        return text
    try:
        data = base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        return text
    comment = gzip_comment(data)
    if comment is None or len(data) < 10 or data[3] != FCOMMENT:
        return text
    return data[10 + len(comment) + 1:]


def same_snapshot(a: str | None, b: str | None) -> bool:
    return a == b or (a is not None and b is not None and content_of(a) == content_of(b))


# -- SQLite helpers both directions use

def file_uri(path: str, mode: str) -> str:
    return pathlib.Path(os.path.abspath(path)).as_uri() + f"?mode={mode}"


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
