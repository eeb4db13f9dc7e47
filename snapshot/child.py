"""The child process of a save or a device probe: `python -m snapshot.child probe|pack-json DIR ...`.

neonize's Go library carries its own SQLite, and Python's sqlite3 is another copy. POSIX locks belong
to the process, so two SQLite copies in one process cannot see each other's locks, and one closing the
file drops the other's (sqlite.org/howtocorrupt.html, "multiple copies of SQLite linked into the same
application"). Once neonize has the database open, the bot reads it only through this child, whose
locks SQLite coordinates properly. Each call answers with one JSON line on stdout: what the parent
needs, or the typed error. People use `python session_manager.py` instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys

from snapshot import signaluse
from snapshot.format import DB_NAME, SnapshotError, SnapshotTooLarge, file_uri
from snapshot.packing import pack_for_store
from snapshot.unpacking import device_jid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m snapshot.child")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("probe", help='{"jid": ...} of the logged-in device in DIR (null: none)').add_argument("dir")
    j = sub.add_parser("pack-json", help='for a save: {"text", "overTarget", "info"} or {"error"}')
    j.add_argument("dir")
    j.add_argument("--target", type=int, required=True)
    j.add_argument("--ceiling", type=int, required=True)
    j.add_argument("--stop-saved-at", type=int, default=None, help="stamp a save at the dyno's stop")
    w = sub.add_parser("watch", help='record key use (signaluse.py) and say {"jid", "maxPreKeyId", "mintedAbove"}')
    w.add_argument("dir")
    w.add_argument("--above", type=int, default=0, help="count the uploaded pre-keys with a higher id")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "probe":
        print(json.dumps({"jid": device_jid(args.dir)}))
        return 0
    if args.command == "watch":
        print(json.dumps(watch(args.dir, args.above)))
        return 0
    try:
        print(json.dumps(pack_for_store(args.dir, args.target, args.ceiling, args.stop_saved_at)))
    except SnapshotError as exc:
        error = {"type": type(exc).__name__, "message": str(exc)}
        if isinstance(exc, SnapshotTooLarge):
            error.update(sizes=exc.sizes, budget=exc.budget)
        print(json.dumps({"error": error}))
    return 0


def watch(directory: str, above: int) -> dict:
    """The cheap periodic look at the live database (prekeywatch.py): installs the use triggers and
    counts the pre-keys whatsmeow minted (uploaded) above the id the stored snapshot ends at."""
    path = os.path.join(directory, DB_NAME)
    if not os.path.isfile(path):
        return {"jid": None, "tracking": False, "maxPreKeyId": None, "mintedAbove": 0, "uploaded": 0}
    try:
        conn = sqlite3.connect(file_uri(path, "rw"), uri=True, timeout=10)
        try:
            tracking = signaluse.install(conn)
            row = conn.execute("SELECT jid FROM whatsmeow_device ORDER BY jid LIMIT 1").fetchone()
            top, minted, uploaded = conn.execute(
                "SELECT MAX(key_id), COALESCE(SUM(uploaded != 0 AND key_id > ?), 0),"
                " COALESCE(SUM(uploaded != 0), 0) FROM whatsmeow_pre_keys", (above,)).fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return {"error": {"type": "SnapshotError", "message": f"cannot read the session database: {exc}"}}
    return {"jid": row[0] if row else None, "tracking": tracking, "maxPreKeyId": top, "mintedAbove": minted,
            "uploaded": uploaded}


if __name__ == "__main__":
    sys.exit(main())
