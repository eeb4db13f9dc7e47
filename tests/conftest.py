"""Shared fixtures. Repo root is on sys.path through pytest.ini's `pythonpath = .`."""

from __future__ import annotations

import pytest

from tests.harness import BotProcess, base_env


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
