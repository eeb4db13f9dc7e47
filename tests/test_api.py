"""Every endpoint through Flask's test client, on a real session and a scripted connection."""

from __future__ import annotations

import base64
import io

import pytest

from app import create_app
from config import Config
from tests.botkit import Bot
from tests.harness import wait_for

KEY = "test-api-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
PROTECTED = [
    ("POST", "/api/save-session"),
    ("POST", "/api/clear-session"),
    ("GET", "/qr"),
    ("POST", "/api/pair"),
    ("POST", "/api/send"),
    ("POST", "/api/send-document"),
]


@pytest.fixture
def bot(tmp_path):
    bot = Bot(tmp_path).start()
    yield bot
    bot.stop()


def make_client(bot, api_key=KEY, **cfg):
    config = Config(api_key=api_key, session_dir=bot.session_dir, max_upload_bytes=cfg.pop("max_upload", 4096), **cfg)
    app = create_app(config, session=bot.session, connection=bot.connection)
    return app.test_client()


@pytest.mark.parametrize("method, path", PROTECTED)
def test_protected_endpoints_refuse_when_no_api_key_is_configured(bot, method, path):
    response = make_client(bot, api_key=None).open(path, method=method, headers=AUTH)
    assert response.status_code == 503
    assert response.json["error"] == "api_key_not_set" and "API_KEY" in response.json["message"]


@pytest.mark.parametrize("method, path", PROTECTED)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"X-Api-Key": "wrong"}, {"Authorization": "Basic !!notbase64"},
     {"Authorization": f"Bearer {KEY}x"}],
)
def test_protected_endpoints_refuse_a_missing_or_wrong_key(bot, method, path, headers):
    response = make_client(bot).open(path, method=method, headers=headers)
    assert response.status_code == 401
    assert response.json["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_health_and_status_need_no_key_and_show_no_phone_number(bot):
    client = make_client(bot)
    assert client.get("/api/health").json["ok"] is True
    bot.pair(seed=11)
    wait_for(lambda: bot.store.writes == 1, 10, "the automatic save")
    body = client.get("/api/session-status").json
    for field in ("hasLocalSession", "hasEnvSession", "timestamp", "state", "store", "storeKind", "lastSave"):
        assert field in body
    assert body["hasLocalSession"] is True and body["state"] == "connected"
    assert "deviceJid" not in body
    assert body["storedSnapshot"]["tier"] and not {"device_jid", "device_lid"} & set(body["storedSnapshot"])
    assert body["storedSnapshot"]["valid"] is True  # named fields are hidden, not every key with "lid" in it
    jid = bot.control.events("paired")[-1]["jid"]
    assert jid.split(":")[0].split("@")[0] not in client.get("/api/session-status").get_data(as_text=True)
    with_key = client.get("/api/session-status", headers={"X-Api-Key": KEY}).json
    assert with_key["deviceJid"] == jid


def test_save_session(bot):
    client = make_client(bot)
    bot.wait_state("waiting_for_qr")
    response = client.post("/api/save-session", headers=AUTH)
    assert response.status_code == 409 and response.json["error"] == "no_session"
    bot.pair(seed=12)
    wait_for(lambda: bot.store.writes == 1, 10, "the automatic save")
    response = client.post("/api/save-session", headers=AUTH)
    assert response.status_code == 200
    assert response.json["saved"] is False and "unchanged" in response.json["message"]
    assert response.json["size"] > 0 and response.json["tier"]
    forced = client.post("/api/save-session?force=true", headers=AUTH)
    assert forced.status_code == 200 and forced.json["reason"].endswith("(forced)")


def test_clear_session(bot):
    client = make_client(bot)
    bot.pair(seed=13)
    response = client.post("/api/clear-session", headers=AUTH)
    assert response.status_code == 200 and response.json["cleared"] is True and response.json["loggedOut"] is True
    bot.wait_state("waiting_for_qr")
    assert not bot.session.has_local_session()


def test_qr_page_takes_basic_auth_and_shows_the_code(bot):
    client = make_client(bot)
    bot.wait_state("waiting_for_qr")
    basic = base64.b64encode(f"anyone:{KEY}".encode()).decode()
    response = client.get("/qr", headers={"Authorization": f"Basic {basic}"})
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "<svg" in page and "fetch(location.pathname" in page  # updates itself (tests/test_qr_browser.py)
    bot.pair()
    assert "<svg" not in client.get("/qr", headers=AUTH).get_data(as_text=True)


@pytest.mark.parametrize(
    "body, status, code",
    [
        ("not json", 400, "bad_request"),
        ([1, 2], 400, "bad_request"),
        ({}, 400, "bad_request"),
        ({"phone": "+15551234567", "extra": 1}, 400, "bad_request"),
        ({"phone": "12"}, 400, "invalid_number"),
        ({"phone": 15551234567}, 400, "invalid_number"),
    ],
)
def test_pair_rejects_bad_input(bot, body, status, code):
    client = make_client(bot)
    if isinstance(body, str):
        response = client.post("/api/pair", data=body, headers={**AUTH, "Content-Type": "application/json"})
    else:
        response = client.post("/api/pair", json=body, headers=AUTH)
    assert response.status_code == status and response.json["error"] == code


def test_pair_returns_the_code_while_waiting_and_409_once_connected(bot):
    client = make_client(bot)
    bot.wait_state("waiting_for_qr")
    response = client.post("/api/pair", json={"phone": "+1 415 555 2671"}, headers=AUTH)
    assert response.status_code == 200 and response.json["code"] == "ABCD-1234"
    assert bot.control.events("pair_phone")[0]["phone"] == "14155552671"
    bot.pair()
    response = client.post("/api/pair", json={"phone": "+14155552671"}, headers=AUTH)
    assert response.status_code == 409 and response.json["error"] == "not_connected"


def test_send(bot):
    client = make_client(bot)
    bot.wait_state("waiting_for_qr")
    response = client.post("/api/send", json={"to": "+14155552671", "text": "hi"}, headers=AUTH)
    assert response.status_code == 409
    bot.pair()
    for bad, code in [({"to": "+14155552671"}, "bad_request"), ({"to": "+14155552671", "text": ""}, "bad_request"),
                      ({"to": "nobody", "text": "hi"}, "invalid_number"),
                      ({"to": "+14155552671", "text": "hi", "cc": "x"}, "bad_request")]:
        response = client.post("/api/send", json=bad, headers=AUTH)
        assert response.status_code == 400 and response.json["error"] == code, bad
    response = client.post("/api/send", json={"to": "+14155552671", "text": "hello"}, headers=AUTH)
    assert response.status_code == 200 and response.json["sent"] is True and response.json["id"]
    group = client.post("/api/send", json={"to": "120363025246125486@g.us", "text": "hey"}, headers=AUTH)
    assert group.status_code == 200
    assert [e["to"] for e in bot.control.events("sent")] == ["14155552671@s.whatsapp.net", "120363025246125486@g.us"]


def test_send_document(bot):
    client = make_client(bot, max_upload=4096)
    bot.pair()
    response = client.post(
        "/api/send-document",
        data={"to": "+14155552671", "caption": "invoice", "file": (io.BytesIO(b"%PDF-1.4 tiny"), "inv.pdf")},
        headers=AUTH,
    )
    assert response.status_code == 200, response.json
    sent = bot.control.events("sent_document")[0]
    assert sent["filename"] == "inv.pdf" and sent["caption"] == "invoice" and sent["size"] == 13
    assert sent["mimetype"] == "application/pdf"
    missing = client.post("/api/send-document", data={"to": "+14155552671"}, headers=AUTH)
    assert missing.status_code == 400 and "file" in missing.json["message"]
    big = client.post(
        "/api/send-document",
        data={"to": "+14155552671", "file": (io.BytesIO(b"x" * 10_000), "big.bin")},
        headers=AUTH,
    )
    assert big.status_code == 413 and big.json["error"] == "request_entity_too_large"
    assert "MAX_UPLOAD_BYTES" in big.json["message"]
