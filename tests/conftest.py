"""Shared fixtures. Repo root is on sys.path through pytest.ini's `pythonpath = .`."""

from __future__ import annotations

import os
import secrets
import subprocess
import warnings

import pytest

from tests.harness import BotProcess, base_env
from tests.support.postgres import PostgresServer, ServerUnavailable


@pytest.fixture
def start_bot(tmp_path):
    """Start real gunicorn bots (Procfile command); every one is stopped when the test ends."""
    started: list[BotProcess] = []

    def start(**env: str) -> BotProcess:
        env.setdefault("SESSION_DIR", str(tmp_path / "session"))
        bot = BotProcess(base_env(**env)).start()
        started.append(bot)
        return bot

    yield start
    for bot in started:
        bot.stop()


@pytest.fixture(scope="session")
def pg_server():
    """One real PostgreSQL on loopback for the whole run (tests/support/postgres.py)."""
    server = PostgresServer()
    try:
        server.start()
    except (ServerUnavailable, OSError, subprocess.SubprocessError) as exc:
        message = f"PostgreSQL tests did NOT run: no PostgreSQL server could be started here: {exc}"
        if os.environ.get("REQUIRE_POSTGRES_TESTS") == "1":
            pytest.fail(message)
        # A skip alone hides in "N skipped"; the warning lands in pytest's summary.
        warnings.warn(UserWarning(message))
        pytest.skip(message)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database_url(pg_server):
    """A fresh, empty database (no whatsmeow tables yet); its URL says sslmode=disable."""
    return pg_server.create_database("t_" + secrets.token_hex(6))
