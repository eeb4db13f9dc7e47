"""Opening a snapshot's database read-only and checking it holds a usable session.

Everything read from the database is untrusted: SQLite's own error texts quote the snapshot's schema
(names, SQL), so they are escaped before they reach a message; every value is length-checked in SQL
before it is fetched, so a 40 MB JID costs a comparison, not 40 MB and seconds of parsing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3

from snapshot.format import DB_NAME, InvalidSnapshot, file_uri
from textsafe import printable

# Longest values a session's device row may hold. A JID or LID is a few dozen characters
# ("15551234567:12@s.whatsapp.net"); adv_details is a serialized ADVDeviceIdentity (three varints,
# about 20 bytes). The bounds leave room for any real value and refuse absurd ones at once.
MAX_JID_CHARS = 256
MAX_ADV_DETAILS_BYTES = 4096
# How much of SQLite's own error text a message quotes (it may quote the snapshot's schema).
ERROR_QUOTE_CHARS = 300

_COUNTED_TABLES = ("whatsmeow_sessions", "whatsmeow_identity_keys", "whatsmeow_contacts",
                   "whatsmeow_sender_keys", "whatsmeow_app_state_sync_keys")


def sqlite_text(exc: BaseException) -> str:
    """SQLite's error text about a snapshot, escaped and cut: it may quote the snapshot's own schema."""
    return printable(exc, ERROR_QUOTE_CHARS)


@contextlib.contextmanager
def database_errors(what: str):
    """Any failure of SQLite (or of decoding what it hands back) on the snapshot's database as one
    InvalidSnapshot: "`what` (SQLite's words, escaped)". A schema row whose name is not UTF-8 makes
    Python's sqlite3 raise UnicodeDecodeError rather than sqlite3.Error, and one whose SQL is a BLOB
    can surface as a TypeError or ValueError of the driver."""
    try:
        yield
    except UnicodeDecodeError:
        raise InvalidSnapshot(f"{what} (a name or text in it is not valid UTF-8)") from None
    except (sqlite3.Error, UnicodeError, TypeError, ValueError, OverflowError) as exc:
        raise InvalidSnapshot(f"{what} ({sqlite_text(exc)})") from None


def read_only_uri(path: str) -> str:
    # immutable=1: SQLite takes no locks and looks for no -journal/-wal/-shm; mode=ro: it cannot write.
    return file_uri(path, "ro") + "&immutable=1"


def open_read_only(path: str) -> sqlite3.Connection:
    with database_errors(f"{DB_NAME} in the snapshot cannot be opened"):
        conn = sqlite3.connect(read_only_uri(path), uri=True)
        conn.execute("PRAGMA trusted_schema = OFF")  # no SQL functions with side effects from its schema
        conn.execute("PRAGMA query_only = ON")
    return conn


@dataclasses.dataclass
class Facts:
    jid: str
    lid: str | None
    adv_details: bytes | None
    prekeys: int
    uploaded_prekeys: int
    max_prekey_id: int | None
    schema_version: int | None
    db_bytes: int
    rows: dict


def validate(conn: sqlite3.Connection) -> Facts:
    """integrity_check and a device row, as the restored session must pass both."""
    with database_errors(f"{DB_NAME} in the snapshot is not a usable database"):
        result = [r[0] for r in conn.execute("PRAGMA integrity_check(5)")]
    if result != ["ok"]:
        # The messages name the snapshot's own indexes and tables: escaped, they are logged.
        found = printable("; ".join(map(str, result)), ERROR_QUOTE_CHARS)
        raise InvalidSnapshot(f"{DB_NAME} in the snapshot is corrupt: {found}")
    with database_errors(f"{DB_NAME} in the snapshot cannot be read"):
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "whatsmeow_device" not in tables:
            raise InvalidSnapshot(f"{DB_NAME} in the snapshot is not a whatsmeow database")
        row = _device_row(conn)
        prekeys = uploaded = 0
        max_prekey = None
        if "whatsmeow_pre_keys" in tables:
            prekeys, uploaded, max_prekey = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(uploaded != 0), 0), MAX(key_id) FROM whatsmeow_pre_keys"
            ).fetchone()
        version = None
        if "whatsmeow_version" in tables:
            # An integer or nothing: any other value is no version of this schema (and is not echoed).
            v = conn.execute(
                "SELECT MAX(version) FROM whatsmeow_version WHERE typeof(version) = 'integer'").fetchone()
            version = v[0] if v else None
        rows = {t[len("whatsmeow_"):]: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in _COUNTED_TABLES if t in tables}
        page_count = conn.execute("PRAGMA page_count").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    return Facts(
        jid=row[0], lid=row[1] or None, adv_details=row[2] if isinstance(row[2], bytes) else None,
        prekeys=prekeys, uploaded_prekeys=uploaded, max_prekey_id=max_prekey, schema_version=version,
        db_bytes=page_count * page_size, rows=rows,
    )


def _device_row(conn: sqlite3.Connection) -> tuple:
    """(jid, lid, adv_details) of the device, each checked for type and length in SQL first."""
    sizes = conn.execute(
        "SELECT typeof(jid), length(CAST(jid AS BLOB)), typeof(lid), length(CAST(lid AS BLOB)),"
        " length(CAST(adv_details AS BLOB)) FROM whatsmeow_device ORDER BY jid LIMIT 1"
    ).fetchone()
    if not sizes or sizes[0] == "null" or not sizes[1]:
        raise InvalidSnapshot(
            "the snapshot's database has no logged-in device (it was saved before pairing "
            "or after a logout); pair again and save a new snapshot"
        )
    jid_type, jid_bytes, lid_type, lid_bytes, adv_bytes = sizes
    for name, kind, size in (("JID", jid_type, jid_bytes), ("LID", lid_type, lid_bytes)):
        if kind not in ("text", "null"):
            raise InvalidSnapshot(f"the device's {name} in the snapshot is not text ({kind}): not a session")
        if (size or 0) > MAX_JID_CHARS:
            raise InvalidSnapshot(
                f"the device's {name} in the snapshot is {size:,} bytes long (a real one is at most "
                f"{MAX_JID_CHARS}): not a session"
            )
    if (adv_bytes or 0) > MAX_ADV_DETAILS_BYTES:
        raise InvalidSnapshot(
            f"the device's adv_details in the snapshot is {adv_bytes:,} bytes long (a real one is at most "
            f"{MAX_ADV_DETAILS_BYTES:,}): not a session"
        )
    return conn.execute("SELECT jid, lid, adv_details FROM whatsmeow_device ORDER BY jid LIMIT 1").fetchone()
