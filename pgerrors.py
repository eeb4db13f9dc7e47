"""The errors of the PostgreSQL session store (pgsession.py) and of moving a session between a SQLite
file and the database (pgcopy.py); each says in `hint` what the user can do about it."""

from __future__ import annotations

from errors import BotError

URL_HINT = ("DATABASE_URL must look like postgres://user:password@host:5432/dbname "
            "(Heroku Postgres sets it for you: heroku addons:create heroku-postgresql:essential-0)")


class PostgresSessionError(BotError):
    """Base of this module's errors; `hint` says what the user can do about it."""

    summary = "the PostgreSQL session store failed"


class DatabaseUrlError(PostgresSessionError, ValueError):
    hint = URL_HINT


class DatabaseError(PostgresSessionError):
    """PostgreSQL refused a statement (a constraint, a permission); nothing was changed."""

    hint = "the transaction was rolled back; see the message for what PostgreSQL refused"


class DatabaseUnavailable(DatabaseError):
    hint = "check DATABASE_URL and that the database is up (heroku pg:info)"


class SchemaError(PostgresSessionError):
    hint = "the session store and this neonize version disagree on whatsmeow's schema"


class DeviceAlreadyPresent(PostgresSessionError):
    hint = ("the database already holds a WhatsApp device; clear it first "
            "(POST /api/clear-session) if you really want to replace it")


class NoDevice(PostgresSessionError):
    hint = "there is no logged-in WhatsApp device to move; scan the QR first"


class SqliteSessionError(PostgresSessionError):
    hint = "expected a whatsmeow SQLite database as neonize writes it (neonize.db)"
