"""Which group member's sender key the bot used last, recorded in the live database for the next snapshot.

A snapshot has room for the sender keys of only some members (snapshot/fill.py keeps the most recently
used first), and whatsmeow's table holds no time of use. Triggers record each write (whatsmeow stores
the key after every group message it decrypts: store/sqlstore/store.go `putSenderKeyQuery`, an upsert)
into our own table, in order: each write deletes the key's row and inserts a new one, so the highest
rowid is the latest use. (1:1 sessions are never packed: format.py says why.)

The table and triggers are ours (OWN_PREFIX): packing never copies them and a restore never brings
them back (it keeps neonize's schema only), so they are installed again after every connect. Only
SQLite sessions have them; a session live in PostgreSQL has no snapshot to fill.

Runs in the snapshot child process (snapshot/child.py `watch`): neonize has the database open.
"""

from __future__ import annotations

import sqlite3

from snapshot.fill import USE_TABLE

_TRIGGERS = {
    # name: (event, table, the row's key as (kind, k1, k2))
    f"{USE_TABLE}_sender_key_insert": ("INSERT", "whatsmeow_sender_keys", "'k', NEW.chat_id, NEW.sender_id"),
    f"{USE_TABLE}_sender_key_update": ("UPDATE", "whatsmeow_sender_keys", "'k', NEW.chat_id, NEW.sender_id"),
}


def install(conn: sqlite3.Connection) -> bool:
    """Create the table and triggers when missing (one transaction). False when whatsmeow's tables
    are not there (yet): nothing to track."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "whatsmeow_sender_keys" not in tables:
        return False
    present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    if USE_TABLE in tables and set(_TRIGGERS) <= present:
        return True
    with conn:
        # No constraint that could ever fail: inside whatsmeow's own upserts the outer statement's
        # conflict policy (ABORT) overrides a trigger's OR REPLACE, so a UNIQUE key here failed
        # whatsmeow's second write of a session ("failed to store cached sessions") and with it the
        # send. A delete and an insert cannot conflict. No AUTOINCREMENT either (it would add a
        # sqlite_sequence row to whatsmeow's database): a new row gets MAX(rowid)+1, all the order needs.
        conn.execute(f"CREATE TABLE IF NOT EXISTS {USE_TABLE} (kind TEXT, k1 TEXT, k2 TEXT)")
        conn.execute(f"CREATE INDEX IF NOT EXISTS {USE_TABLE}_key ON {USE_TABLE} (kind, k1, k2)")
        for name, (event, table, key) in _TRIGGERS.items():
            kind, k1, k2 = (part.strip() for part in key.split(","))
            conn.execute(f"CREATE TRIGGER IF NOT EXISTS {name} AFTER {event} ON {table} BEGIN"
                         f" DELETE FROM {USE_TABLE} WHERE kind = {kind} AND k1 = {k1} AND k2 = {k2};"
                         f" INSERT INTO {USE_TABLE} (kind, k1, k2) VALUES ({key}); END")
    return True
