"""Hostile requests (issue 21, section 4): numbers past float, image bombs, slow clients.

In process where the view's answer is the point; on real gunicorn where memory or threads are.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import time

import pytest
import requests

from app import create_app
from config import Config
from tests.support import mediafiles
from tests.support.botkit import WAIT, Bot
from tests.support.harness import wait_for
from tests.support.slowclients import Dripper, peak_rss_mb, worker_pid

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


# -- /api/send-image: image bombs ----------------------------------------------------------------------

def test_an_image_bomb_is_refused_from_its_header_and_a_large_image_goes_without_a_thumbnail(bot):
    client = make_client(bot, max_upload=1024 * 1024)
    bot.pair()
    bomb = client.post("/api/send-image", headers=AUTH,
                       data={"to": "+14155552671", "file": (io.BytesIO(mediafiles.WEBP_BOMB), "a.webp")})
    assert bomb.status_code == 413 and bomb.json["error"] == "image_too_large", bomb.json
    assert "13000 x 13000" in bomb.json["message"] and "megapixels" in bomb.json["message"]
    assert not bot.control.events("upload"), "nothing of a refused image reaches WhatsApp"
    # 16 megapixels of lossless WebP: within MAX_IMAGE_PIXELS, past the thumbnail's decode budget (18 bytes
    # a pixel in libwebp's animation decoder): sent as it is, with its size and without a thumbnail.
    large = mediafiles.webp_bomb(4000, 4000)
    response = client.post("/api/send-image", headers=AUTH,
                           data={"to": "+14155552671", "file": (io.BytesIO(large), "a.webp")})
    assert response.status_code == 200, response.json
    image = bot.control.events("sent_message")[-1]["message"]["imageMessage"]
    assert image["width"] == 4000 and image["height"] == 4000 and "JPEGThumbnail" not in image


def test_image_bombs_keep_the_worker_under_300_mb_on_real_gunicorn(start_bot):
    bot = start_bot(API_KEY=KEY)
    bot.wait_healthy()
    bot.wait_for_line("WhatsApp unreachable")  # settled: the connection is trying (no WhatsApp here)
    worker = worker_pid(bot)

    def send(data: bytes):
        response = requests.post(bot.url + "/api/send-image", headers=AUTH, timeout=120,
                                 data={"to": "+14155552671"}, files={"file": ("a.bin", data)})
        return response.status_code, response.json()

    # Issue 21's two bombs: 13000 x 13000 pixels each (676 MB decoded), 34 bytes and 672 KB.
    for name, data in (("34-byte WebP", mediafiles.WEBP_BOMB), ("PNG of zeros", mediafiles.png_of_zeros(13000, 13000))):
        status, body = send(data)
        assert status == 413 and body["error"] == "image_too_large", (name, status, body)
    # The largest images that still get a thumbnail (decode within THUMBNAIL_DECODE_BUDGET), and one
    # just under MAX_IMAGE_PIXELS, which goes without: no WhatsApp here, so they end at the connection
    # (409), after the thumbnail was made.
    for name, data in (("WebP 2700 x 2700", mediafiles.webp_bomb(2700, 2700)),
                       ("PNG 3800 x 3900", mediafiles.png_of_zeros(3800, 3900)),
                       ("PNG 9000 x 9900", mediafiles.png_of_zeros(9000, 9900))):
        status, body = send(data)
        assert status == 409 and body["error"] == "not_connected", (name, status, body)
    peak = peak_rss_mb(worker)
    print(f"worker peak RSS after the bombs and the largest thumbnails: {peak:.0f} MB")
    assert peak < 300, f"the worker peaked at {peak:.0f} MB"
    assert bot.request("GET", "/api/health")[0] == 200 and worker_pid(bot) == worker


# -- slow clients: request heads dripped a byte a second ------------------------------------------------

def test_twenty_clients_dripping_headers_neither_starve_health_nor_last_on_real_gunicorn(start_bot):
    import config

    bot = start_bot(API_KEY=KEY)
    bot.wait_healthy()
    drippers = [Dripper(bot.port) for _ in range(20)]  # more than the 16 request threads
    try:
        wait_for(lambda: all(d.sock for d in drippers), WAIT, "the drippers to connect")
        # Health answers while they drip, again and again: no request thread is theirs.
        answered = []
        while time.monotonic() - drippers[-1].started < config.REQUEST_ARRIVAL_TIMEOUT - 3:
            started = time.monotonic()
            status, body = bot.request("GET", "/api/health", timeout=5)
            assert status == 200 and body["ok"] is True
            answered.append(time.monotonic() - started)
        assert len(answered) >= 3 and max(answered) < 2.0, answered
        assert not [d for d in drippers if d.cut_after is not None], "cut before their deadline"
        # Then each is cut at its deadline (the worker sweeps once a second), with a 408 in the API's shape.
        deadline = config.REQUEST_ARRIVAL_TIMEOUT + 5
        wait_for(lambda: all(d.cut_after is not None for d in drippers), deadline + 5, "every dripper cut off")
        for dripper in drippers:
            assert config.REQUEST_ARRIVAL_TIMEOUT - 1 <= dripper.cut_after <= deadline, dripper.cut_after
            assert dripper.answer.startswith(b"HTTP/1.1 408 "), dripper.answer[:100]
            assert b'"error": "request_timeout"' in dripper.answer
    finally:
        for dripper in drippers:
            dripper.close()
    assert bot.request("GET", "/api/health")[0] == 200
    # Said in the log, in one line a minute however many there are (the first sweep may not get all 20).
    bot.wait_for_line("connection(s) whose request line and headers did not arrive within 10s")


def test_a_request_head_larger_than_the_bound_is_431_and_normal_requests_still_work(start_bot):
    import config

    bot = start_bot(API_KEY=KEY)
    bot.wait_healthy()
    with socket.create_connection(("127.0.0.1", bot.port), timeout=10) as sock:
        start = b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: "
        # One byte past the bound and no more: the bot reads all of it, so its close is no reset.
        sock.sendall(start + b"x" * (config.MAX_REQUEST_HEAD_BYTES + 1 - len(start)))
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 ") and b"request_header_too_large" in answer
    # A head that comes in pieces, and a body behind it, still reach the API whole.
    with socket.create_connection(("127.0.0.1", bot.port), timeout=10) as sock:
        body = json.dumps({"to": "+14155552671", "text": "hi"}).encode()
        head = (f"POST /api/send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        for piece in (head[:7], head[7:40], head[40:-2], head[-2:] + body[:5], body[5:]):
            sock.sendall(piece)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 409 "), answer[:300]  # not connected to WhatsApp: the body was read
    assert b"Connection: close" in answer
