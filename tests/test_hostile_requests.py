"""Hostile requests (issue 21, section 4): numbers past float, image bombs, slow clients.

In process where the view's answer is the point; on real gunicorn where memory or threads are.
"""

from __future__ import annotations

import logging

import pytest

from app import create_app
from config import Config
from tests.support.botkit import Bot

KEY = "test-api-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def bot(tmp_path):
    bot = Bot(tmp_path).start()
    yield bot
    bot.stop()


def make_client(bot, max_upload=4096):
    config = Config(api_key=KEY, session_dir=bot.session_dir, max_upload_bytes=max_upload)
    return create_app(config, session=bot.session, connection=bot.connection).test_client()


# -- /api/send-location: JSON integers have no size limit ------------------------------------------

@pytest.mark.parametrize("field, raw", [
    ("latitude", "1" + "0" * 400),
    ("latitude", "-1" + "0" * 400),
    ("longitude", "1" + "0" * 4000),  # under Python's 4,300-digit limit for int()
])
def test_a_coordinate_too_large_for_a_float_is_a_400_without_a_traceback(bot, caplog, field, raw):
    client = make_client(bot, max_upload=16 * 1024)
    bot.pair()
    other = "longitude" if field == "latitude" else "latitude"
    body = f'{{"to": "+14155552671", "{field}": {raw}, "{other}": 1}}'
    with caplog.at_level(logging.ERROR):
        response = client.post("/api/send-location", data=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 400, response.json
    assert response.json["error"] == "invalid_media" and field in response.json["message"]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert not bot.control.events("sent_message")
