"""whatsmeow's schema, made by neonize itself: its migrations run on a database in a child process.

Opening a database with neonize's NewClient and connecting runs whatsmeow's migrations (store/sqlstore
/upgrades) before the dial. The dial goes to a dead local proxy, so it fails at once and nothing leaves
the machine; the database is then at this neonize's schema version. In a child process: neonize's Go
runtime must not be loaded into the caller (it does not survive fork), and connect() blocks.
Used for a restore's empty template (snapshot/unpacking.py) and for PostgreSQL (pgsession.py).
"""

from __future__ import annotations

import os
import subprocess
import sys

_SCRIPT = """
import os, sys
sys.path.append(os.environ["NEONIZE_SCHEMA_CODE"])  # last: nothing of ours shadows what neonize imports
import deferred_imports
deferred_imports.defer(*deferred_imports.NEONIZE_UNUSED)
from neonize.client import NewClient
client = NewClient(os.environ["NEONIZE_SCHEMA_DB"])
try:
    client.connect()
except Exception as exc:
    print("neonize:", type(exc).__name__, exc, file=sys.stderr)
"""

_DEAD_PROXY = "http://127.0.0.1:9"
_CODE_DIR = os.path.dirname(os.path.abspath(__file__))  # the child runs in another directory


def run_migrations(database: str, *, timeout: float, python: str | None = None,
                   cwd: str | None = None) -> subprocess.CompletedProcess:
    """Bring `database` (a SQLite path or a postgres:// URL) to whatsmeow's schema. Raises
    subprocess.TimeoutExpired or OSError; the caller reads the outcome from the database itself and
    the child's output (a "failed to dial" is the expected end)."""
    env = dict(os.environ, NEONIZE_SCHEMA_DB=database, NEONIZE_SCHEMA_CODE=_CODE_DIR,
               HTTPS_PROXY=_DEAD_PROXY, https_proxy=_DEAD_PROXY, HTTP_PROXY=_DEAD_PROXY, http_proxy=_DEAD_PROXY,
               NO_PROXY="", no_proxy="")
    return subprocess.run([python or sys.executable, "-c", _SCRIPT], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
