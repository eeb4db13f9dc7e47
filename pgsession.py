"""The live WhatsApp session in PostgreSQL (Heroku Postgres, `DATABASE_URL`).

A config var holds a snapshot and has a size ceiling; a database holds the
session itself. neonize (its Go side, goneonize/main.go `getDB`) opens PostgreSQL
instead of SQLite when the name given to `NewClient` starts with "postgres", and
whatsmeow's sqlstore then keeps the device and all its keys there, live: no
snapshot, no size limit, no dyno restart on save.

The Go driver is lib/pq (v1.12.3 in neonize 0.5.2's .so). Heroku gives
`postgres://user:pass@host:5432/db` and refuses non-TLS connections. lib/pq
1.12.3 already defaults to sslmode=require, but its next release changes the
default to `prefer` (which silently falls back to plaintext), so the URL we hand
to neonize states `sslmode=require` unless the user stated a mode.

Moving a session between a SQLite file (as neonize writes it, the file inside a
WHATSAPP_SESSION snapshot) and the database is done row by row here, in Python,
on a schema that neonize itself created on both sides: this module never writes
a CREATE TABLE of its own, so it cannot drift from whatsmeow's schema.

Nothing here puts a password into a log line or an exception: use `redact(url)`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

import pgcopy
from pgcopy import VERSION_TABLE, Column, Table, parents_first
from pgerrors import (  # this store's errors, named here too: callers catch pgsession.X
    URL_HINT,
    DatabaseError,
    DatabaseUnavailable,
    DatabaseUrlError,
    DeviceAlreadyPresent,
    NoDevice,
    PostgresSessionError,
    SchemaError,
    SqliteSessionError,
)
from neonize_schema import run_migrations
from redaction import mask, redact_url

log = logging.getLogger(__name__)

# lib/pq's accepted values (connector.go, sslModes).
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
DEFAULT_SSLMODE = "require"

# whatsmeow_privacy_tokens belongs to a device (our_jid) but has no foreign key
# to whatsmeow_device, so deleting the device does not cascade to it.
UNCASCADED_DEVICE_TABLES = ("whatsmeow_privacy_tokens",)

SCHEMA_TIMEOUT = 90.0  # seconds for the neonize subprocess; it normally takes < 1 s
CONNECT_TIMEOUT = 10  # seconds, libpq connect_timeout


# --------------------------------------------------------------------------- URLs
def neonize_database_url(database_url: str) -> str:
    """The URL to give neonize (and psycopg) for a `DATABASE_URL` as Heroku gives it.

    Accepts postgres:// and postgresql://; adds sslmode=require unless the URL
    states an sslmode (a local server without TLS needs `?sslmode=disable`).
    """
    if not isinstance(database_url, str) or not database_url.strip():
        raise DatabaseUrlError("DATABASE_URL is empty")
    url = database_url.strip()
    scheme, sep, _rest = url.partition("://")
    if not sep or scheme.lower() not in ("postgres", "postgresql"):
        raise DatabaseUrlError(f"DATABASE_URL is not a postgres:// URL: {redact(url)}")
    # neonize picks PostgreSQL by a case-sensitive "postgres" prefix.
    url = scheme.lower() + "://" + _rest
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise DatabaseUrlError(f"DATABASE_URL cannot be parsed: {redact(url)}",
                               URL_HINT + "; percent-encode special characters in the password") from None
    if parts.fragment:
        raise DatabaseUrlError(f"DATABASE_URL has a '#' part: {redact(url)}",
                               "percent-encode '#' in the password as %23")
    if not parts.hostname:
        raise DatabaseUrlError(f"DATABASE_URL names no host: {redact(url)}")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    sslmode = params.get("sslmode")
    if sslmode is None:
        query = parts.query + ("&" if parts.query else "") + f"sslmode={DEFAULT_SSLMODE}"
        url = urlunsplit(parts._replace(query=query))
    elif sslmode not in SSL_MODES:
        raise DatabaseUrlError(f"DATABASE_URL has an unknown sslmode {sslmode!r}",
                               "use one of " + ", ".join(SSL_MODES))
    return url


redact = redact_url  # the one URL redactor (redaction.py), under the name this module uses


def _password_of(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        secret = parts.password or dict(parse_qsl(parts.query)).get("password")
        return unquote(secret) if secret else None
    except ValueError:
        return None


# --------------------------------------------------------------------------- the store
class PostgresSession:
    """The session store that is the session itself: whatsmeow's tables in PostgreSQL."""

    kind = "postgres"

    def __init__(self, database_url: str, *, python: str | None = None,
                 schema_timeout: float = SCHEMA_TIMEOUT):
        self.url = neonize_database_url(database_url)  # what NewClient(...) gets
        self.python = python or sys.executable  # an interpreter that can import neonize
        self.schema_timeout = schema_timeout
        self._password = _password_of(self.url)

    def __repr__(self) -> str:
        return f"PostgresSession({redact(self.url)})"

    # -- connections ---------------------------------------------------------
    def _scrub(self, text: str) -> str:
        secrets = (self._password, quote(self._password, safe="")) if self._password else ()
        return mask(text, secrets)

    @contextmanager
    def _connect(self, **kwargs):
        import psycopg  # imported late: only a Postgres deployment needs the driver

        try:
            conn = psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT, **kwargs)
        except psycopg.Error as exc:
            raise DatabaseUnavailable(
                f"cannot connect to {redact(self.url)}: {self._scrub(exc)}") from None
        try:
            with conn:  # commits on success, rolls back on error, then closes
                yield conn
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(
                f"lost the connection to {redact(self.url)}: {self._scrub(exc)}") from None
        except psycopg.Error as exc:
            raise DatabaseError(f"{redact(self.url)} refused: {self._scrub(exc)}") from None

    @staticmethod
    def _has_table(conn, name: str) -> bool:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]

    @staticmethod
    def _schema_version(conn) -> int | None:
        if not PostgresSession._has_table(conn, VERSION_TABLE):
            return None
        row = conn.execute(f"SELECT version FROM {VERSION_TABLE} LIMIT 1").fetchone()
        return row[0] if row else None

    @staticmethod
    def _tables(conn) -> list[Table]:
        """whatsmeow's data tables in the current schema, parents before children."""
        rows = conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name LIKE 'whatsmeow\\_%%'"
            " AND table_name <> %s ORDER BY table_name, ordinal_position",
            (VERSION_TABLE,)).fetchall()
        columns: dict[str, list[Column]] = {}
        for table, column, data_type in rows:
            columns.setdefault(table, []).append(Column(column, data_type))
        fks = conn.execute(
            "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c"
            " WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace").fetchall()
        order = parents_first(list(columns), [(child, parent) for child, parent in fks])
        return [Table(name, tuple(columns[name])) for name in order]

    def _device_jids(self, conn) -> list[str]:
        if not self._has_table(conn, "whatsmeow_device"):
            return []
        # No ORDER BY, like whatsmeow's GetFirstDevice: the first row is the one neonize uses.
        return [row[0] for row in conn.execute("SELECT jid FROM whatsmeow_device")]

    # -- the store interface ---------------------------------------------------
    def device_jid(self) -> str | None:
        with self._connect() as conn:
            jids = self._device_jids(conn)
        return jids[0] if jids else None

    def has_device(self) -> bool:
        return self.device_jid() is not None

    def describe(self) -> dict:
        """For the status endpoint: where the session lives and what it holds; never raises."""
        parts = urlsplit(self.url)
        info = {"kind": self.kind, "host": parts.hostname, "port": parts.port or 5432,
                "database": parts.path.lstrip("/") or None, "url": redact(self.url),
                "live": True, "has_device": False, "device_jid": None, "push_name": None,
                "schema_version": None}
        try:
            with self._connect() as conn:
                info["schema_version"] = self._schema_version(conn)
                if self._has_table(conn, "whatsmeow_device"):
                    row = conn.execute("SELECT jid, push_name FROM whatsmeow_device LIMIT 1").fetchone()
                    if row:
                        info.update(has_device=True, device_jid=row[0], push_name=row[1] or None)
        except PostgresSessionError as exc:
            info["error"] = str(exc)
        return info

    def clear(self) -> bool:
        """Delete the device and everything it owns, so neonize offers a new QR.

        The running neonize client keeps its device in memory: stop it before
        clearing and start a new one after. Returns whether there was a device.
        """
        with self._connect() as conn:
            jids = self._device_jids(conn)
            if not jids:
                return False
            for table in UNCASCADED_DEVICE_TABLES:
                if self._has_table(conn, table):
                    conn.execute(f"DELETE FROM {pgcopy.quote(table)} WHERE our_jid = ANY(%s)", (jids,))
            # Every other device table has ON DELETE CASCADE from whatsmeow_device.
            conn.execute("DELETE FROM whatsmeow_device WHERE jid = ANY(%s)", (jids,))
        log.info("Deleted WhatsApp device %s from %s", ", ".join(jids), redact(self.url))
        return True

    def ensure_schema(self) -> int:
        """Let neonize create (or upgrade) whatsmeow's schema; returns its version."""
        self._neonize_touch(self.url)
        with self._connect() as conn:
            version = self._schema_version(conn)
        if version is None:
            raise SchemaError(f"neonize did not create whatsmeow's tables in {redact(self.url)}")
        return version

    def _neonize_touch(self, target: str) -> None:
        """Open `target` (a postgres URL or a SQLite path) with neonize in a subprocess."""
        try:
            done = run_migrations(target, timeout=self.schema_timeout, python=self.python)
        except subprocess.TimeoutExpired:
            raise SchemaError(f"neonize took over {self.schema_timeout:.0f}s to open "
                              f"{redact(target)}", DatabaseUnavailable.hint) from None
        # A dial failure is the expected outcome; anything about the database is not.
        output = self._scrub(done.stderr + done.stdout)
        if done.returncode != 0 or "failed to dial" not in output:
            lines = [line for line in output.splitlines() if "ffmpeg" not in line]
            raise SchemaError(f"neonize could not open {redact(target)}: "
                              f"{' '.join(lines)[-600:] or 'exit code ' + str(done.returncode)}",
                              DatabaseUnavailable.hint)

    # -- migration: SQLite file -> database --------------------------------------
    def import_from_sqlite(self, sqlite_path: str) -> str:
        """Copy the device of a neonize SQLite file into the database; returns its JID.

        All in one transaction; refuses when the database already holds a device.
        The SQLite file is only read (through a copy, brought to this neonize's
        schema version by neonize if it is older).
        """
        pgcopy.check_sqlite_file(sqlite_path)
        present = self.device_jid()  # fail fast; checked again under a lock below
        if present:
            raise DeviceAlreadyPresent(f"{redact(self.url)} already holds device {present}")
        pg_version = self.ensure_schema()
        with tempfile.TemporaryDirectory(prefix="pgsession-") as work:
            copy = os.path.join(work, "neonize.db")
            pgcopy.sqlite_backup(sqlite_path, copy)
            file_version = pgcopy.sqlite_schema_version(copy)
            if file_version is not None and file_version < pg_version:
                self._neonize_touch(copy)  # whatsmeow upgrades the old schema in place
                file_version = pgcopy.sqlite_schema_version(copy)
            if file_version != pg_version:
                raise SchemaError(f"the SQLite session has whatsmeow schema v{file_version}, "
                                  f"the database v{pg_version}",
                                  "run the same neonize version on both sides (pip install -r requirements.txt)")
            return self._copy_into_postgres(copy)

    def _copy_into_postgres(self, sqlite_path: str) -> str:
        source = sqlite3.connect(f"file:{sqlite_path}?mode=ro", uri=True)
        try:
            device_jids = [row[0] for row in source.execute("SELECT jid FROM whatsmeow_device")]
            if not device_jids:
                raise NoDevice("the SQLite session holds no logged-in device")
            with self._connect() as conn:
                # Two boots importing at once must not both see an empty table.
                conn.execute("LOCK TABLE whatsmeow_device IN SHARE ROW EXCLUSIVE MODE")
                present = self._device_jids(conn)
                if present:
                    raise DeviceAlreadyPresent(f"{redact(self.url)} already holds device {present[0]}")
                for table in UNCASCADED_DEVICE_TABLES:  # leftovers of a device whatsmeow deleted
                    conn.execute(f"DELETE FROM {pgcopy.quote(table)} WHERE our_jid = ANY(%s)", (device_jids,))
                counts = {}
                for table in self._tables(conn):
                    counts[table.name] = pgcopy.copy_table_into_postgres(source, conn, table)
        finally:
            source.close()
        log.info("Imported WhatsApp device %s into %s (%s)", device_jids[0], redact(self.url),
                 ", ".join(f"{name[len('whatsmeow_'):]}={n}" for name, n in counts.items() if n))
        return device_jids[0]

    # -- migration: database -> SQLite file ---------------------------------------
    def export_to_sqlite(self, sqlite_path: str) -> str:
        """Write the database's session into a new neonize SQLite file; returns the device JID.

        The file is made by neonize (its own schema), filled, then moved into place;
        an existing file is never overwritten.
        """
        if os.path.lexists(sqlite_path):
            raise FileExistsError(f"{sqlite_path} already exists; export writes a new file only")
        target_dir = os.path.dirname(os.path.abspath(sqlite_path))
        os.makedirs(target_dir, exist_ok=True)
        with self._connect() as conn:
            if not self._device_jids(conn):
                raise NoDevice(f"{redact(self.url)} holds no logged-in device")
            pg_version = self._schema_version(conn)
        # Same directory, so the final rename is atomic.
        with tempfile.TemporaryDirectory(prefix=".pgsession-", dir=target_dir) as work:
            fresh = os.path.join(work, "neonize.db")
            self._neonize_touch(fresh)
            file_version = pgcopy.sqlite_schema_version(fresh)
            if file_version != pg_version:
                raise SchemaError(f"this neonize makes whatsmeow schema v{file_version}, "
                                  f"the database has v{pg_version}",
                                  "run the same neonize version that wrote the database")
            jid = self._copy_into_sqlite(fresh)
            os.replace(fresh, sqlite_path)
        return jid

    def _copy_into_sqlite(self, sqlite_path: str) -> str:
        target = sqlite3.connect(sqlite_path, isolation_level=None)
        try:
            target.execute("PRAGMA foreign_keys = ON")
            target.execute("BEGIN IMMEDIATE")
            # One consistent snapshot of every table while the bot keeps writing.
            with self._connect() as conn:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                jids = self._device_jids(conn)
                if not jids:
                    raise NoDevice(f"{redact(self.url)} holds no logged-in device")
                for table in self._tables(conn):
                    pgcopy.copy_table_into_sqlite(conn, target, table)
            target.execute("COMMIT")
        except BaseException:
            if target.in_transaction:
                target.execute("ROLLBACK")
            raise
        finally:
            target.close()
        log.info("Exported WhatsApp device %s from %s", jids[0], redact(self.url))
        return jids[0]



__all__ = [
    "DatabaseError", "DatabaseUnavailable", "DatabaseUrlError", "DeviceAlreadyPresent", "NoDevice", "PostgresSession",
    "PostgresSessionError", "SchemaError", "SqliteSessionError", "neonize_database_url", "redact",
]
