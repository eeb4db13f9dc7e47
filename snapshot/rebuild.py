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
import stat
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

#: A directory where the template is kept for the next process (unset: each process makes its own).
#: A dyno restores once a day, so it never needs it; a laptop restarting the bot, the tests and the
#: benchmarks, which start hundreds of bots, each save ~1 s of a neonize child process per start.
CACHE_DIR_VAR = "SCHEMA_CACHE_DIR"


def neonize_template() -> Template:
    """An empty database made by neonize's own migrations, made once per process (~1 s), or once per
    neonize version in SCHEMA_CACHE_DIR, and copied for every restore. Made in a child process:
    neonize's Go runtime must not be loaded into the caller, which may be the bot itself (see
    session_manager._snapshot_cli on two SQLite copies in one process)."""
    global _template
    with _template_lock:
        if _template is not None and os.path.isfile(_template.path):
            return _template
        cache_path = _cache_path()
        if cache_path:
            _template = _read_template(cache_path)
            if _template is not None:
                return _template
        directory = tempfile.mkdtemp(prefix="snapshot-schema-", dir=os.path.dirname(cache_path) if cache_path else None)
        path = os.path.join(directory, DB_NAME)
        try:
            template = _build(path)
        except BaseException:
            shutil.rmtree(directory, True)
            raise
        if cache_path:
            # Whole or not at all: a process starting meanwhile finds the finished file or none (and
            # builds its own); two building at once put the same schema in place, one after the other.
            os.replace(path, cache_path)
            os.rmdir(directory)
            template = Template(cache_path, template.version)
        else:
            atexit.register(shutil.rmtree, directory, True)
        _template = template
        return _template


def _cache_path() -> str | None:
    """Where SCHEMA_CACHE_DIR keeps this neonize version's template, or None when it is unset or not a
    directory of ours that nobody else may write to (a template written by someone else would be
    copied into every restored session)."""
    directory = os.environ.get(CACHE_DIR_VAR)
    if not directory:
        return None
    try:
        info = os.lstat(directory)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        return None
    import importlib.metadata  # here: the children of a save never read the cache, and this costs them 40 ms

    try:
        version = importlib.metadata.version("neonize")
    except importlib.metadata.PackageNotFoundError:
        return None
    return os.path.join(directory, f"neonize-{version}-schema.db")


def _read_template(path: str) -> Template | None:
    """The cached template when it is a whole one of ours (a regular file, read-only, with neonize's
    tables), else None."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o222:
        return None
    tables, version = _schema_of(path)
    return Template(path, version) if "whatsmeow_device" in tables else None


def _schema_of(path: str) -> tuple[set[str], int | None]:
    try:
        conn = sqlite3.connect(read_only_uri(path), uri=True)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            version = conn.execute("SELECT MAX(version) FROM whatsmeow_version").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return set(), None
    return tables, version


def _build(path: str) -> Template:
    """Run neonize's migrations on a new database at `path` (in a child process) and check the result."""
    directory = os.path.dirname(path)
    try:
        done = run_migrations(path, timeout=120, cwd=directory)
        output = (done.stderr + done.stdout).strip().splitlines()
    except (OSError, subprocess.TimeoutExpired) as exc:
        output = [str(exc)]
    tables, version = _schema_of(path)
    if "whatsmeow_device" not in tables:
        raise SnapshotError(
            "neonize did not create its database schema, needed to restore a snapshot "
            f"({(output or ['no output'])[-1][:300]})"
        )
    os.chmod(path, 0o400)
    return Template(path, version)


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
