"""The session a WhatsApp connection drives: its interface, the two kinds, and the CLI for moving one.

Two sibling implementations of one `Session` interface:
- `SnapshotSession` (snapshot_session.py): neonize's SQLite database on local disk, kept across
  restarts as a snapshot in a store (a Heroku config var, or a local file on a laptop).
- `LiveDatabaseSession` (live_session.py): neonize's tables in PostgreSQL, nothing to snapshot.

The session owns its whole policy: when to restore, the one save after a pairing, saving through the
API, wiping after a logout. whatsapp.py only drives the connection and reports what happened.

CLI, to move a session between Heroku, Postgres and a laptop (`python session_manager.py --help`):
    python session_manager.py pack DIR [--budget N] [--tier T] > snapshot.txt
    python session_manager.py unpack DIR < snapshot.txt
    python session_manager.py inspect < snapshot.txt
    python session_manager.py pg-export [--budget N] > snapshot.txt     (DATABASE_URL)
    python session_manager.py pg-import < snapshot.txt                  (DATABASE_URL)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Protocol

import snapshot
from errors import BotError
from textsafe import printable


class Session(Protocol):
    """What a `whatsapp.Connection` may ask of its session, and what the API shows of it."""

    kind: str
    restored_from: str | None
    #: Set by app.create_app when WEBHOOK_URL is set: `notify("save_failed", data)` when a save or the
    #: wipe of the stored session fails (data: errors.failure_event, never a token or a snapshot).
    #: Must not block: it only queues the event.
    notify: Callable[[str, dict], None] | None

    def restore_on_boot(self) -> str:
        """Before the first connect: bring the stored session back. Returns where it came from
        ("local", "store", "database", "snapshot", "none", "failed"); never raises for bad data."""

    def database(self) -> str:
        """The name handed to neonize's NewClient: a SQLite path or a postgres:// URL."""

    def device_jid(self) -> str | None:
        """The logged-in device, as last known (cheap: the status endpoint asks often)."""

    def has_local_session(self) -> bool:
        """Whether there is a logged-in device to connect with."""

    def connected(self, still_connected: Callable[[], bool]) -> None:
        """WhatsApp logged in (after a restore or a new pairing). Must return at once: it is called
        on neonize's event thread. The session decides whether anything needs saving."""

    def wait_until_device_gone(self, timeout: float = 5.0) -> bool:
        """After a logout event: let whatsmeow finish deleting the device before `wipe`."""

    def wipe(self, reason: str) -> None:
        """Forget the session, locally and in its store. Only after a real logout (or when asked)."""

    def save(self, *, force: bool = False, reason: str = "requested", wait: float | None = 0.0) -> dict:
        """Store the session now (the API's save); see SnapshotSession.save for `wait`."""

    def status(self) -> dict:
        """Everything the status endpoint may show; the API decides what a caller without the key sees."""

    def close(self) -> None:
        """The worker stops: start nothing new."""

    def save_at_stop(self, seconds_left: float, *, recycling: bool = False) -> dict | None:
        """After close(), as the worker exits: the save at the dyno's stop (stopsave.py), if any."""


def build_session(cfg) -> Session:
    """The session for the configured store (config.Config)."""
    if cfg.session_store == "postgres":
        from live_session import LiveDatabaseSession
        from pgsession import PostgresSession

        return LiveDatabaseSession(PostgresSession(cfg.database_url), snapshot_value=cfg.session_value)
    import stores
    from snapshot_session import SnapshotSession

    return SnapshotSession(cfg.session_dir, stores.make_store(cfg), save_delay=cfg.session_save_delay,
                           save_deadline=cfg.save_deadline, prekey_check_interval=cfg.prekey_check_interval)


# Fields that name the account (its phone number, LID, profile name): shown to key holders only.
# Named one by one: matching substrings ("lid") once hid "valid" too.
_PRIVATE_FIELDS = frozenset({"deviceJid", "device_jid", "device_lid", "jid", "jids", "push_name", "connectedAs"})


def public_view(status: dict) -> dict:
    """A session's status (plus the connection's) as a caller without the API key may see it: no
    account identity, and errors as our own fixed words with the HTTP status. The upstream text
    (masked) is for key holders only."""
    public = {k: v for k, v in status.items() if k not in _PRIVATE_FIELDS}
    for name in ("storedSnapshot", "store"):
        if isinstance(public.get(name), dict):
            public[name] = {k: v for k, v in public[name].items() if k not in _PRIVATE_FIELDS}
            if isinstance(public[name].get("last_error"), dict):
                public[name]["last_error"] = _public_error(public[name]["last_error"])
            if public[name].get("error"):  # the database server's own words (live_session), the snapshot's
                public[name]["error"] = (_PUBLIC_STORED_ERROR if name == "storedSnapshot"
                                         else "the database could not be reached or read")
    if isinstance(public.get("lastSaveError"), dict):
        public["lastSaveError"] = _public_error(public["lastSaveError"])
    if public.get("restoreError"):
        public["restoreError"] = PUBLIC_RESTORE_ERROR
    return public


# What a caller without the key learns of a failed restore: our own words. The snapshot's error text
# quotes the snapshot (its schema, its names), so it is for key holders only (escaped).
PUBLIC_RESTORE_ERROR = ("the stored session could not be restored; a QR code is shown and a new pairing "
                        "replaces it (the details need the API key)")
_PUBLIC_STORED_ERROR = "the stored snapshot is not a usable session (the details need the API key)"


def _public_error(record: dict) -> dict:
    kept = {k: record[k] for k in ("type", "status", "during", "at") if k in record}
    return {**kept, "message": record.get("summary") or "the last save failed; the details need the API key"}


# -- CLI ---------------------------------------------------------------------------------------------

_DESCRIPTION = """Move a WhatsApp session between Heroku, PostgreSQL and a laptop.

snapshot text is what WHATSAPP_SESSION holds: base64 of a tar.gz of neonize's database."""

_EPILOG = f"""examples:
  heroku config:get WHATSAPP_SESSION | python session_manager.py inspect
  heroku config:get WHATSAPP_SESSION | python session_manager.py unpack ./session
  python session_manager.py pack ./session > snapshot.txt
  DATABASE_URL=$(heroku config:get DATABASE_URL) python session_manager.py pg-export > snapshot.txt
exit status: 0 done, 1 error, {snapshot.EXIT_TOO_LARGE} snapshot over the budget even at its smallest tier"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        # One line and exit status 1, like every other error of this CLI (argparse: usage + status 2).
        self.exit(1, f"error: {message} (see: python session_manager.py --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python session_manager.py", description=_DESCRIPTION,
                                     epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    budget_help = f"most characters the snapshot may have (default {snapshot.DEFAULT_BUDGET})"
    p = sub.add_parser("pack", help="snapshot of the session in DIR, to stdout")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--budget", type=_positive, default=snapshot.DEFAULT_BUDGET, help=budget_help)
    p.add_argument("--tier", choices=snapshot.TIERS, help="exactly this tier (default: the most complete that fits)")
    u = sub.add_parser("unpack", help="restore a snapshot from stdin into DIR (ours or `tar czf - -C DIR . | base64`)")
    u.add_argument("dir", metavar="DIR")
    sub.add_parser("inspect", help="describe a snapshot from stdin as JSON (no key material); writes nothing")
    e = sub.add_parser("pg-export", help="the session in PostgreSQL (DATABASE_URL) as a snapshot, to stdout")
    e.add_argument("--budget", type=_positive, default=snapshot.DEFAULT_BUDGET, help=budget_help)
    sub.add_parser("pg-import", help="import a snapshot from stdin into PostgreSQL (DATABASE_URL)")
    return parser


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"needs a positive number of characters, got {text or 'nothing'!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command in ("pg-export", "pg-import"):
            return _postgres_command(args)
        if args.command == "pack":
            sys.stdout.write(snapshot.pack(args.dir, args.budget, args.tier))
            sys.stdout.flush()
        elif args.command == "unpack":
            # stdin as a stream: the snapshot is decoded piece by piece, never read whole.
            info = snapshot.unpack(sys.stdin.buffer, args.dir)
            print(f"restored {snapshot.describe_restore(info)} into {args.dir}", file=sys.stderr)
        else:
            print(json.dumps(snapshot.inspect(sys.stdin.buffer).as_dict(), indent=2))
    except snapshot.SnapshotTooLarge as exc:
        print(f"error: {exc}", file=sys.stderr)
        # The figures again, as JSON on the last line, for a script that runs this command.
        print(json.dumps({"sizes": exc.sizes, "budget": exc.budget}), file=sys.stderr)
        return snapshot.EXIT_TOO_LARGE
    except BotError as exc:
        # Escaped: a snapshot's error may quote its own schema (terminal escapes, newlines).
        print(f"error: {printable(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {printable(exc.strerror or exc)} ({printable(exc.filename or '')})", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug of ours on input nobody foresaw: still one line, never a traceback
        print(f"error: unexpected {type(exc).__name__} ({printable(exc, 300)}); please report it", file=sys.stderr)
        return 1
    return 0


def _postgres_command(args) -> int:
    from live_session import LiveDatabaseSession
    from pgsession import PostgresSession

    url = os.environ.get("DATABASE_URL")
    if not url:
        print("error: set DATABASE_URL (heroku config:get DATABASE_URL)", file=sys.stderr)
        return 1
    # A malformed DATABASE_URL raises inside main's try: a one-line error with a hint, not a traceback.
    session = LiveDatabaseSession(PostgresSession(url))
    if args.command == "pg-export":
        sys.stdout.write(session.export_snapshot(args.budget) + "\n")
    else:
        jid = session.import_snapshot(sys.stdin.buffer)  # streamed, as unpack and inspect are
        print(f"imported {printable(jid)} into PostgreSQL", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
