"""A restored session never mints a pre-key id that a lost boot may have minted with other key material.

whatsmeow picks the next one-time pre-key id as MAX(key_id)+1 of its table (store/sqlstore/store.go
`getNextPreKeyID`), for a retry receipt's key (`GenOnePreKey`) and for a new batch it uploads
(`GetOrGenPreKeys`). Every boot restored from the same snapshot starts from the same table, so each
would mint the same ids with new random keys: a peer still holding a key of a lost boot, or the server
still handing out a batch a lost boot uploaded, would then meet other material under the same id.

Nothing a boot writes survives on the config-var store unless it saves (a release and a restart), so
the boots cannot count themselves. The clock can: a restore raises the table's maximum to the number of
FENCE_SECONDS since FENCE_EPOCH (a placeholder row, uploaded=true so it is never handed out), and the
ranges of two boots restored FENCE_SECONDS apart are disjoint as long as the first minted fewer keys
than it had been up in FENCE_SECONDS steps. whatsmeow mints one per second retry receipt and 50 per
batch, and a batch makes the bot save (prekeywatch.py), so a boot never comes near it. Two boots within
the same FENCE_SECONDS could share their first ids: a dyno restart takes longer than that.

The fence row's key is FENCE_KEY (all zeros, never uploaded nor sent, so no peer can name its id), and
packing leaves it out: the next restore sets a higher fence from the clock anyway, and a session that
did nothing since its restore packs to the very text it was restored from (no save for nothing).

The wire carries a pre-key id in 3 bytes (prekeys.go `preKeyToNode`: keyID[1:]), so ids must stay below
2**24: at one per FENCE_SECONDS from 2026 that lasts until 2041; past MAX_FENCE no fence is set (the
previous behaviour) and the restore logs why.
"""

from __future__ import annotations

import logging
import sqlite3
import time

log = logging.getLogger("session")

FENCE_EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z
FENCE_SECONDS = 30
MAX_PREKEY_ID = (1 << 24) - 1
# Room left above the last fence for the ids the boots after it mint.
MAX_FENCE = MAX_PREKEY_ID - 1_000_000
FENCE_KEY = bytes(32)
# The same test in SQL, for packing's row filters.
NOT_FENCE_SQL = "key IS NOT x'" + FENCE_KEY.hex() + "'"


def clock_id(now: float) -> int:
    return max(0, int(now - FENCE_EPOCH) // FENCE_SECONDS)


def raise_prekey_ids(conn: sqlite3.Connection, now: float | None = None) -> dict:
    """Put the fence row into a restored database (inside the caller's transaction).

    Returns {jid: the fence id} for each device whose maximum was raised."""
    fence = clock_id(time.time() if now is None else now)
    raised = {}
    if fence > MAX_FENCE:
        log.warning("pre-key id fence %d is past %d: not set (whatsmeow continues from the snapshot's ids)",
                    fence, MAX_FENCE)
        return raised
    for (jid,) in conn.execute("SELECT jid FROM whatsmeow_device ORDER BY jid").fetchall():
        conn.execute("DELETE FROM whatsmeow_pre_keys WHERE jid = ? AND key = ?", (jid, FENCE_KEY))  # a full copy's
        top = conn.execute("SELECT MAX(key_id) FROM whatsmeow_pre_keys WHERE jid = ?", (jid,)).fetchone()[0]
        if top is not None and top >= fence:
            continue  # the snapshot's own ids run ahead of the clock: it is their maximum that counts
        # uploaded=true: whatsmeow never uploads it (GetOrGenPreKeys takes uploaded=false rows).
        conn.execute("INSERT INTO whatsmeow_pre_keys (jid, key_id, key, uploaded) VALUES (?, ?, ?, 1)",
                     (jid, fence, FENCE_KEY))
        raised[jid] = fence
    return raised
