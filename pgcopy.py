"""Moving whatsmeow's rows between a neonize SQLite file and PostgreSQL, table by table, on schemas that
neonize itself created on both sides (pgsession.py decides when; this module knows how a value of each
column type is stored on either side)."""

from __future__ import annotations

import os
import re
import sqlite3
import uuid
from dataclasses import dataclass

from pgerrors import SchemaError, SqliteSessionError

# Bookkeeping of whatsmeow's schema migrations (go.mau.fi/util dbutil); every
# other whatsmeow_* table holds session data.
VERSION_TABLE = "whatsmeow_version"

# whatsmeow_lid_map is a database-wide cache of LID <-> phone-number facts from
# the server, not owned by a device: copied without overwriting, never cleared.
SHARED_TABLES = ("whatsmeow_lid_map",)

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str  # information_schema data_type: bytea, boolean, bigint, integer, text, uuid


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]


def quote(identifier: str) -> str:
    # Names come from the catalogs, but they end up in SQL text: check them.
    if not _IDENTIFIER.match(identifier):
        raise SchemaError(f"unexpected table or column name {identifier!r}")
    return f'"{identifier}"'


def to_postgres(value, pg_type: str):
    """A value read from whatsmeow's SQLite file, as its PostgreSQL column wants it.

    In SQLite the columns declared bytea/BOOLEAN/uuid have NUMERIC affinity; the Go
    driver (mattn/go-sqlite3) writes []byte as BLOB, bool as integer 0/1 and
    uuid.UUID (a driver.Valuer returning a string) as TEXT.
    """
    if value is None:
        return None
    if pg_type == "bytea":
        return value.encode() if isinstance(value, str) else bytes(value)
    if pg_type == "boolean":
        if isinstance(value, str):
            return value.strip().lower() in ("1", "t", "true")
        return bool(value)
    if pg_type == "uuid":
        if isinstance(value, (bytes, memoryview)) and len(value) == 16:
            return uuid.UUID(bytes=bytes(value))
        return uuid.UUID(value.decode() if isinstance(value, bytes) else str(value))
    if pg_type in ("smallint", "integer", "bigint"):
        return int(value)
    if pg_type == "text" and isinstance(value, bytes):
        return value.decode()
    return value


def to_sqlite(value, pg_type: str):
    """A value read from PostgreSQL, stored the way go-sqlite3 would have stored it."""
    if value is None:
        return None
    if pg_type == "boolean":
        return int(value)
    if pg_type == "uuid":
        return str(value)
    if pg_type == "bytea":
        return bytes(value)
    return value


def parents_first(tables: list[str], foreign_keys: list[tuple[str, str]]) -> list[str]:
    """`tables` ordered so a table comes after the tables its foreign keys point to."""
    parents = {table: {parent for child, parent in foreign_keys if child == table and parent != table}
               for table in tables}
    ordered: list[str] = []
    while len(ordered) < len(tables):
        ready = sorted(t for t in tables if t not in ordered and parents[t] <= set(ordered))
        if not ready:  # a cycle (whatsmeow has none): fall back to name order
            ready = sorted(t for t in tables if t not in ordered)
        ordered.extend(ready)
    return ordered


def copy_table_into_postgres(source: sqlite3.Connection, conn, table: Table) -> int:
    file_columns = [row[1] for row in source.execute(f"PRAGMA table_info({quote(table.name)})")]
    if not file_columns:
        return 0  # the file's schema lacks this table: nothing to copy
    known = {column.name: column for column in table.columns}
    unknown = [name for name in file_columns if name not in known]
    if unknown:
        raise SchemaError(f"the SQLite session's {table.name} has columns the database lacks: "
                          f"{', '.join(unknown)}")
    columns = [known[name] for name in file_columns]
    names = ", ".join(quote(column.name) for column in columns)
    rows = [tuple(to_postgres(value, column.pg_type) for value, column in zip(row, columns))
            for row in source.execute(f"SELECT {names} FROM {quote(table.name)}")]
    if not rows:
        return 0
    conflict = " ON CONFLICT DO NOTHING" if table.name in SHARED_TABLES else ""
    placeholders = ", ".join(["%s"] * len(columns))
    with conn.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {quote(table.name)} ({names}) VALUES ({placeholders}){conflict}",
                           rows)
    return len(rows)


def copy_table_into_sqlite(conn, target: sqlite3.Connection, table: Table) -> None:
    file_columns = {row[1] for row in target.execute(f"PRAGMA table_info({quote(table.name)})")}
    missing = [column.name for column in table.columns if column.name not in file_columns]
    if missing:
        raise SchemaError(f"neonize's SQLite {table.name} lacks columns the database has: "
                          f"{', '.join(missing)}")
    names = ", ".join(quote(column.name) for column in table.columns)
    placeholders = ", ".join(["?"] * len(table.columns))
    insert = f"INSERT INTO {quote(table.name)} ({names}) VALUES ({placeholders})"
    with conn.cursor() as cursor:
        cursor.execute(f"SELECT {names} FROM {quote(table.name)}")
        while batch := cursor.fetchmany(500):
            target.executemany(insert, [
                tuple(to_sqlite(value, column.pg_type) for value, column in zip(row, table.columns))
                for row in batch])


def check_sqlite_file(path: str) -> None:
    if not os.path.isfile(path):
        raise SqliteSessionError(f"no SQLite session file at {path}")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            found = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='whatsmeow_device'"
                                 ).fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise SqliteSessionError(f"{path} is not a readable SQLite database: {exc}") from None
    if not found:
        raise SqliteSessionError(f"{path} has no whatsmeow_device table")


def sqlite_backup(source_path: str, copy_path: str) -> None:
    """A consistent copy of a SQLite file (its -wal included) that we may modify."""
    source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
    try:
        copy = sqlite3.connect(copy_path)
        try:
            source.backup(copy)
        finally:
            copy.close()
    finally:
        source.close()


def sqlite_schema_version(path: str) -> int | None:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute(f"SELECT version FROM {VERSION_TABLE} LIMIT 1").fetchone()
        return row[0] if row else None
    except sqlite3.DatabaseError:
        return None
    finally:
        conn.close()
