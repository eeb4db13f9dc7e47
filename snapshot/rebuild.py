"""neonize's own empty schema, and the snapshot's rows put into a copy of it.

A restore never keeps the snapshot's schema: its rows are copied, column by column and by name, into a
database neonize's own migrations made. So no trigger, view, index, virtual table, extra table or
column of the snapshot reaches the session directory, and the CHECK constraints and defaults are
neonize's.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading

from neonize_schema import run_migrations
from snapshot.format import DB_NAME, SnapshotError, file_uri, quote_identifier
from snapshot.validation import database_errors, read_only_uri


@dataclasses.dataclass
class Template:
    path: str
    version: int | None


_template: Template | None = None
_template_lock = threading.Lock()


def neonize_template() -> Template:
    """An empty database made by neonize's own migrations, made once per process (~1 s) and copied
    for every restore. In a child process: neonize's Go runtime must not be loaded into the caller,
    which may be the bot itself (see session_manager._snapshot_cli on two SQLite copies in one process)."""
    global _template
    with _template_lock:
        if _template is not None and os.path.isfile(_template.path):
            return _template
        directory = tempfile.mkdtemp(prefix="snapshot-schema-")
        atexit.register(shutil.rmtree, directory, True)
        path = os.path.join(directory, DB_NAME)
        try:
            done = run_migrations(path, timeout=120, cwd=directory)
            output = (done.stderr + done.stdout).strip().splitlines()
        except (OSError, subprocess.TimeoutExpired) as exc:
            output = [str(exc)]
        try:
            conn = sqlite3.connect(read_only_uri(path), uri=True)
            try:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                version = conn.execute("SELECT MAX(version) FROM whatsmeow_version").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.Error:
            tables, version = set(), None
        if "whatsmeow_device" not in tables:
            raise SnapshotError(
                "neonize did not create its database schema, needed to restore a snapshot "
                f"({(output or ['no output'])[-1][:300]})"
            )
        os.chmod(path, 0o400)
        _template = Template(path, version)
        return _template


def rebuild(source_path: str, template_path: str, target_path: str):
    """Write at `target_path` a copy of neonize's empty database holding the snapshot's rows.

    Only what neonize's schema defines is carried over: its tables, and in them the columns it
    defines. The snapshot's triggers, views, indexes, extra tables and columns stay behind, and its
    CHECK constraints and defaults are neonize's. Identifiers come from the template and are quoted;
    no value is ever part of the SQL text.
    """
    shutil.copyfile(template_path, target_path)
    os.chmod(target_path, 0o600)
    conn = sqlite3.connect(file_uri(target_path, "rw"), uri=True, isolation_level=None)
    try:
        with database_errors(f"the rows of {DB_NAME} in the snapshot do not fit neonize's schema"):
            conn.execute("PRAGMA trusted_schema = OFF")
            conn.execute("ATTACH DATABASE ? AS src", (read_only_uri(source_path),))
            conn.execute("BEGIN")
            tables = [r[0] for r in conn.execute(
                "SELECT name FROM main.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
                " ORDER BY name")]
            # What SQLite itself says each of the snapshot's tables is ("table", "view", "virtual",
            # "shadow"), never a reading of their SQL text: `CREATE  VIRTUAL TABLE` with two spaces, or
            # SQL stored as a BLOB, says nothing reliable about what the table is.
            kinds = {str(r[1]).lower(): r[2] for r in conn.execute("PRAGMA src.table_list")
                     if isinstance(r[1], str)}
            for table in tables:
                if table == "whatsmeow_version":
                    continue  # the template's own, checked equal to the snapshot's
                # A view or a virtual table under a whatsmeow name is not a table of rows to copy.
                if kinds.get(table.lower()) != "table":
                    continue
                their_columns = {str(r[1]).lower()
                                 for r in conn.execute(f"PRAGMA src.table_info({quote_identifier(table)})")}
                columns = [r[1] for r in conn.execute(f"PRAGMA main.table_info({quote_identifier(table)})")
                           if r[1].lower() in their_columns]
                if columns:
                    names = ", ".join(quote_identifier(c) for c in columns)
                    conn.execute(f"INSERT INTO main.{quote_identifier(table)} ({names}) "
                                 f"SELECT {names} FROM src.{quote_identifier(table)}")
            conn.execute("COMMIT")
            conn.execute("DETACH DATABASE src")
    finally:
        conn.close()
