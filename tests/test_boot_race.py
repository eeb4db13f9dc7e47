"""Requests in the first moments after boot (issue 21, section 1).

A send in the first seconds after the bot answered /api/health used to import part of neonize in the
request thread while the connection thread was importing neonize.client: the connection thread got
`_frozen_importlib._DeadlockError`, logged "cannot create the WhatsApp client" and ended for good
(state `stopped`, 0 connect attempts) while /api/health kept saying ok. Now neonize is imported once
(neonize_lib.py) in the worker's main thread before it takes requests, the connect loop survives any
error, and a stopped connection makes /api/health answer 503.

Each boot here is real gunicorn with the real neonize against the loopback WhatsApp server; every
endpoint of the app gets a request that reaches its connection call, all fired together within the
first 100 ms after /api/health first answered.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

from tests.support.harness import wait_for
from tests.support.mediafiles import image, ogg_opus
from tests.support.simulator import sim_overrides

API_KEY = "boot-race-api-key-7c1d2e"
WAIT = 30.0


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data, mime) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: {mime}\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


TO = "4915112345678"  # a number phonenumbers accepts
# A body for each endpoint that gets past validation to the connection (or the session).
BODIES: dict[tuple[str, str], tuple[bytes | None, str | None]] = {
    ("POST", "/api/send"): (json.dumps({"to": TO, "text": "hi"}).encode(), "application/json"),
    ("POST", "/api/send-location"): (json.dumps({"to": TO, "latitude": 52.5, "longitude": 13.4}).encode(),
                                     "application/json"),
    ("POST", "/api/pair"): (json.dumps({"phone": "+14155550123"}).encode(), "application/json"),
    ("POST", "/api/send-image"): _multipart({"to": TO}, {"file": ("a.png", image(), "image/png")}),
    ("POST", "/api/send-audio"): _multipart({"to": TO}, {"file": ("a.ogg", ogg_opus(1.0), "audio/ogg")}),
    ("POST", "/api/send-document"): _multipart({"to": TO}, {"file": ("a.txt", b"hello", "text/plain")}),
    ("POST", "/api/read"): (json.dumps({"chat": TO, "messageIds": ["3EB0C0FFEE"]}).encode(), "application/json"),
    ("POST", "/api/presence"): (json.dumps({"to": TO, "state": "typing"}).encode(), "application/json"),
    ("POST", "/api/react"): (json.dumps({"chat": TO, "messageId": "3EB0C0FFEE", "emoji": "👍"}).encode(),
                             "application/json"),
    ("POST", "/api/edit"): (json.dumps({"chat": TO, "messageId": "3EB0C0FFEE", "text": "new"}).encode(),
                            "application/json"),
    ("POST", "/api/delete"): (json.dumps({"chat": TO, "messageId": "3EB0C0FFEE"}).encode(), "application/json"),
    ("POST", "/api/check-numbers"): (json.dumps({"numbers": [TO]}).encode(), "application/json"),
}
# Endpoints that would undo what the test checks (a wipe) are left out; their import paths are the
# same as the others'.
LEFT_OUT = {("POST", "/api/clear-session")}


def _routes() -> list[tuple[str, str]]:
    """Every (method, path) the app serves, read from the app itself so a new endpoint is covered."""
    import os
    from unittest import mock

    import app as app_module
    import config
    from tests.support.harness import base_env

    with mock.patch.dict(os.environ, base_env(API_KEY=API_KEY, SESSION_DIR="/nonexistent-session-dir"), clear=True):
        cfg = config.load_config()
    routes = []
    flask_app = app_module.create_app(cfg, session=object(), connection=object())
    for rule in flask_app.url_map.iter_rules():
        if rule.endpoint == "static" or "<" in rule.rule:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if (method, rule.rule) not in LEFT_OUT:
                routes.append((method, rule.rule))
    return routes


def _request(url: str, method: str, path: str) -> tuple[int, bytes]:
    data, content_type = BODIES.get((method, path), (b"{}" if method == "POST" else None, "application/json"))
    req = urllib.request.Request(url + path, data=data if method == "POST" else None, method=method)
    req.add_header("X-Api-Key", API_KEY)
    if method == "POST" and content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=WAIT) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize("boot", [1, 2])
def test_requests_right_after_boot_leave_the_connection_running(sim, start_bot, boot):
    routes = _routes()
    assert ("POST", "/api/send-image") in routes
    bot = start_bot(API_KEY=API_KEY, **sim_overrides(sim))

    def first_answer():
        if bot.proc.poll() is not None:
            raise AssertionError(f"bot exited:\n{bot.output()}")
        try:
            return bot.request("GET", "/api/health", timeout=0.5)[0] == 200
        except OSError:
            return False

    wait_for(first_answer, WAIT, "the first answer of /api/health", interval=0.01)
    answered_at = time.monotonic()
    results: dict[tuple[str, str], tuple[int, bytes]] = {}
    started: list[float] = []

    def fire(route):
        started.append(time.monotonic())
        results[route] = _request(bot.url, *route)

    threads = [threading.Thread(target=fire, args=(route,)) for route in routes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    print(f"{len(routes)} requests fired within {max(started) - answered_at:.3f}s of the first health answer")

    for route, (status, body) in results.items():
        assert status < 500, f"{route}: {status} {body[:300]!r}\n{bot.output()[-3000:]}"
        assert b"Traceback" not in body
    # The connection lives on: it reaches the simulator and shows a QR code.
    health = bot.wait_state("waiting_for_qr", timeout=WAIT)
    assert health["ok"] is True
    status = bot.request("GET", "/api/session-status", headers={"X-Api-Key": API_KEY})[1]
    assert status["connectAttempts"] >= 1 and status["connectionRunning"] is True
    assert "DeadlockError" not in bot.output() and "cannot create the WhatsApp client" not in bot.output()


# -- the connect loop survives its own failures -----------------------------------------------------

def test_a_client_that_cannot_be_created_is_retried_not_given_up(tmp_path):
    """The old loop logged "cannot create the WhatsApp client" once and ended for good."""
    from tests.support.botkit import Bot

    bot = Bot(tmp_path)
    make_client, failures = bot._make_client, []

    def flaky(database):
        if len(failures) < 3:
            failures.append(database)
            raise ImportError("cannot import name 'add_exif' from partially initialized module")
        return make_client(database)

    bot.connection._factory = flaky
    try:
        bot.start()
        bot.wait_state("waiting_for_qr")
        assert len(failures) == 3 and bot.connection.loop_errors == 3 and bot.connection.running()
    finally:
        bot.stop()


def test_an_error_anywhere_in_the_loop_is_survived(tmp_path):
    from tests.support.botkit import Bot

    bot = Bot(tmp_path)
    calls = []

    def broken_probe():
        calls.append(1)
        if len(calls) == 1:
            raise SystemError("a bug in the loop")  # not Unreachable: before, only the probe caught it

    bot.connection._probe = broken_probe
    bot.connection._probe_error = lambda: broken_probe()  # the bug escapes into the loop itself
    try:
        bot.start()
        bot.wait_state("waiting_for_qr")
        assert bot.connection.loop_errors == 1 and "a bug in the loop" in bot.connection.last_error
    finally:
        bot.stop()


def test_health_says_503_when_the_connection_is_not_running(tmp_path):
    """A stopped connection (its thread ended) is visible to a monitor, not "ok"."""
    import flask

    import api
    from tests.support.botkit import Bot

    bot = Bot(tmp_path).start()
    try:
        bot.wait_state("waiting_for_qr")
        app = flask.Flask("t")
        app.extensions["whatsapp"] = bot.connection
        app.register_blueprint(api.api)
        client = app.test_client()
        assert client.get("/api/health").status_code == 200
        bot.stop()
        response = client.get("/api/health")
        assert response.status_code == 503 and response.json["ok"] is False
        assert response.json["error"] == "connection_stopped"  # the API's one error shape
        assert response.json["state"] == "stopped"
    finally:
        bot.stop()
