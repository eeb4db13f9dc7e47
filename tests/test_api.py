"""Every endpoint through Flask's test client, on a real session and a scripted connection."""

from __future__ import annotations

import base64
import io
import json
import logging

import pytest

from app import create_app
from config import Config
from stores import HerokuConfigVarStore
from tests.support.botkit import WAIT, Bot
from tests.support.fake_heroku import FakeHeroku
from tests.support.harness import wait_for
from tests.support.openapi_check import SchemaCheckedClient

KEY = "test-api-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
PROTECTED = [
    ("POST", "/api/save-session"),
    ("POST", "/api/clear-session"),
    ("GET", "/qr"),
    ("GET", "/api/qr"),
    ("POST", "/api/pair"),
    ("POST", "/api/send"),
    ("POST", "/api/send-document"),
    ("POST", "/api/send-image"),
    ("POST", "/api/send-audio"),
    ("POST", "/api/send-location"),
    ("POST", "/api/read"),
    ("POST", "/api/presence"),
    ("POST", "/api/react"),
    ("POST", "/api/edit"),
    ("POST", "/api/delete"),
    ("POST", "/api/check-numbers"),
    ("GET", "/api/groups"),
]
CHAT_ACTIONS = [  # a valid body each; the simulator tests (test_sim_actions.py) check what WhatsApp gets
    ("POST", "/api/read", {"chat": "+14155552671", "messageIds": ["3EB0C0FFEE"]}),
    ("POST", "/api/presence", {"to": "+14155552671", "state": "typing"}),
    ("POST", "/api/react", {"chat": "+14155552671", "messageId": "3EB0C0FFEE", "emoji": "👍"}),
    ("POST", "/api/edit", {"chat": "+14155552671", "messageId": "3EB0C0FFEE", "text": "new"}),
    ("POST", "/api/delete", {"chat": "+14155552671", "messageId": "3EB0C0FFEE"}),
    ("POST", "/api/check-numbers", {"numbers": ["+14155552671"]}),
    ("GET", "/api/groups", None),
]


@pytest.fixture
def bot(tmp_path):
    bot = Bot(tmp_path).start()
    yield bot
    bot.stop()


def make_client(bot, api_key=KEY, **cfg):
    config = Config(api_key=api_key, session_dir=bot.session_dir, max_upload_bytes=cfg.pop("max_upload", 4096), **cfg)
    app = create_app(config, session=bot.session, connection=bot.connection)
    app.test_client_class = SchemaCheckedClient  # every answer below is checked against openapi.yaml
    return app.test_client()


@pytest.mark.parametrize("method, path", PROTECTED)
def test_protected_endpoints_refuse_when_no_api_key_is_configured(bot, method, path):
    response = make_client(bot, api_key=None).open(path, method=method, headers=AUTH)
    assert response.status_code == 503
    assert response.json["error"] == "api_key_not_set" and "API_KEY" in response.json["message"]
    # The hint fits where the bot runs: Heroku's command only on a dyno.
    assert "heroku" not in response.json["message"]
    on_heroku = make_client(bot, api_key=None, dyno="web.1").open(path, method=method, headers=AUTH)
    assert "heroku config:set API_KEY" in on_heroku.json["message"]


def test_start_warns_about_a_short_key_and_never_logs_it(bot, caplog):
    with caplog.at_level(logging.INFO):
        client = make_client(bot, api_key="sh0rt")
        client.post("/api/save-session", headers={"X-Api-Key": "wrong"})
    assert any(r.levelno == logging.WARNING and "API_KEY has 5 characters" in r.getMessage() for r in caplog.records)
    from logsetup import secret_filter

    assert secret_filter.mask("X-Api-Key: sh0rt") == "X-Api-Key: [redacted]"


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
    # Only the page a browser opens invites HTTP Basic; the others name the header they take.
    assert response.headers["WWW-Authenticate"].startswith("Basic" if path == "/qr" else "Bearer")


def test_health_and_status_need_no_key_and_show_no_phone_number(bot):
    client = make_client(bot)
    assert client.get("/api/health").json["ok"] is True
    bot.pair(seed=11)
    bot.wait_saved()
    body = client.get("/api/session-status").json
    for field in ("hasLocalSession", "hasEnvSession", "timestamp", "state", "store", "storeKind", "lastSave"):
        assert field in body
    assert body["hasLocalSession"] is True and body["state"] == "connected"
    assert "deviceJid" not in body
    stored = body["storedSnapshot"]
    assert stored["tier"] and "device_jid" not in stored and "device_lid" not in stored
    assert stored["valid"] is True  # "valid" contains "lid" and is no identity
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
    bot.wait_saved()
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


def test_api_qr_gives_the_code_as_json_and_png_then_says_it_is_not_waiting(bot):
    import calendar
    import time

    import zxingcpp
    from PIL import Image

    client = make_client(bot)
    bot.wait_state("waiting_for_qr")
    code = bot.control.events("qr")[-1]["code"]
    response = client.get("/api/qr", headers=AUTH)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    body = response.json
    assert body["code"] == code and body["state"] == "waiting_for_qr" and body["index"] == 1
    expires = calendar.timegm(time.strptime(body["expiresAt"], "%Y-%m-%dT%H:%M:%SZ"))
    assert 55 <= expires - time.time() <= 61, "whatsmeow's first code of a round lives 60 s"
    png = client.get("/api/qr?format=png", headers=AUTH)
    assert png.status_code == 200 and png.mimetype == "image/png" and png.data[:8] == b"\x89PNG\r\n\x1a\n"
    decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(png.data)))
    assert [d.text for d in decoded] == [code], "a phone camera reads the same code"
    assert client.get("/api/qr?format=gif", headers=AUTH).json["error"] == "bad_request"
    bot.pair()
    for path in ("/api/qr", "/api/qr?format=png"):
        response = client.get(path, headers=AUTH)
        assert response.status_code == 409 and response.json["error"] == "not_waiting_for_qr"
        assert response.json["state"] == "connected" and "not waiting for a scan" in response.json["message"]


def test_later_codes_of_a_round_live_20_seconds(bot):
    import whatsapp

    client = make_client(bot)
    bot.wait_state("waiting_for_qr")
    bot.control.send("qr")  # whatsmeow's next code of the same round
    wait_for(lambda: client.get("/api/qr", headers=AUTH).json["index"] == 2, WAIT, "the second code")
    assert bot.connection.qr_expires_at - whatsapp.time.time() <= whatsapp.QR_NEXT_CODE_SECONDS


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


# -- hostile requests (issue 12) -------------------------------------------------------------------

BASIC = {"Authorization": "Basic " + base64.b64encode(f"anyone:{KEY}".encode()).decode()}


@pytest.mark.parametrize("method, path", [p for p in PROTECTED if p != ("GET", "/qr")])
def test_http_basic_is_for_the_qr_page_only(bot, method, path):
    # A browser that once opened /qr resends these credentials by itself, whichever site's page
    # makes the request: a form on any site could otherwise wipe the session.
    response = make_client(bot).open(path, method=method, headers=BASIC)
    assert response.status_code == 401 and response.json["error"] == "unauthorized"


def test_a_cross_site_form_cannot_clear_the_session(bot):
    client = make_client(bot)
    bot.pair(seed=14)
    bot.wait_saved()
    form = {"Origin": "https://evil.example", "Content-Type": "application/x-www-form-urlencoded"}
    response = client.post("/api/clear-session", data="x=1", headers={**form, **BASIC})
    assert response.status_code in (401, 403)
    # Even with the key in a header (a page cannot set one cross-site, but a leaked key in a script
    # run from another origin could): the Origin is not this app's.
    response = client.post("/api/clear-session", headers={"Origin": "https://evil.example", **AUTH})
    assert response.status_code == 403 and response.json["error"] == "cross_origin"
    response = client.post("/api/clear-session", headers={"Origin": "null", **AUTH})
    assert response.status_code == 403
    assert bot.session.has_local_session() and bot.connection.state == "connected"


@pytest.mark.parametrize(
    "origin, host, forwarded",
    [
        ("http://localhost", "localhost", {}),
        ("http://localhost:8000", "localhost:8000", {}),
        ("https://my-bot.herokuapp.com", "my-bot.herokuapp.com", {"X-Forwarded-Proto": "https"}),
        ("https://bot.example.com", "internal:5000", {"X-Forwarded-Host": "bot.example.com"}),
    ],
)
def test_requests_from_the_apps_own_pages_pass_the_origin_check(bot, origin, host, forwarded):
    client = make_client(bot)
    bot.wait_state("waiting_for_qr")
    headers = {"Origin": origin, "Host": host, **forwarded, **AUTH}
    response = client.post("/api/save-session", headers=headers)
    assert response.status_code == 409 and response.json["error"] == "no_session"  # past the checks
    other_site = client.post("/api/save-session", headers={**headers, "Origin": "https://other.example"})
    assert other_site.status_code == 403
    if ":" in host:  # an explicit port is part of the address
        other_port = client.post("/api/save-session", headers={**headers, "Origin": origin + "1"})
        assert other_port.status_code == 403


def test_json_nested_100000_deep_is_a_400_without_a_traceback(bot, caplog):
    client = make_client(bot, max_upload=1024 * 1024)
    deep = "[" * 100_000 + "]" * 100_000
    with caplog.at_level(logging.ERROR):
        response = client.post("/api/send", data=deep, headers={**AUTH, "Content-Type": "application/json"})
        nested = client.post(
            "/api/send", data='{"to": ' + "{\"a\": " * 100_000 + "1" + "}" * 100_001,
            headers={**AUTH, "Content-Type": "application/json"},
        )
    assert response.status_code == 400 and response.json["error"] == "bad_request"
    assert nested.status_code == 400
    assert "nested too deeply" in response.json["message"]
    assert not [r for r in caplog.records if r.exc_info]


def test_error_messages_quote_only_a_short_escaped_prefix_of_the_input(bot):
    client = make_client(bot, max_upload=4 * 1024 * 1024)
    bot.pair()
    huge = "+1" + "5" * 2_000_000
    for body, path in [
        ({"to": huge, "text": "hi"}, "/api/send"),
        ({"to": "x" * 1_000_000 + "@s.whatsapp.net", "text": "hi"}, "/api/send"),
        ({"phone": huge}, "/api/pair"),
        ({"to": "+14155552671", "text": "hi", "f" * 1_000_000: 1}, "/api/send"),
    ]:
        response = client.post(path, json=body, headers=AUTH)
        assert response.status_code == 400
        assert len(response.get_data()) < 500, response.get_data()[:200]
    response = client.post("/api/send", json={"to": "\u202enot\x00a number", "text": "hi"}, headers=AUTH)
    message = response.json["message"]
    assert "\u202e" not in message and "\x00" not in message and "\\x00" in message
    form = client.post("/api/send-document", data={"to": "5" * 100_000, "file": (io.BytesIO(b"x"), "a.txt")},
                       headers=AUTH)
    assert form.status_code == 400 and len(form.get_data()) < 500


def test_a_chunked_json_body_over_the_limit_is_413(bot):
    client = make_client(bot, max_upload=4096)
    bot.pair()
    body = json.dumps({"to": "+14155552671", "text": "x" * 10_000}).encode()
    response = client.post(
        "/api/send", input_stream=io.BytesIO(body),
        headers={**AUTH, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        # What gunicorn sets for a chunked request: the body ends where the chunks end.
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413 and "MAX_UPLOAD_BYTES" in response.json["message"]
    small = json.dumps({"to": "+14155552671", "text": "hello"}).encode()
    response = client.post(
        "/api/send", input_stream=io.BytesIO(small),
        headers={**AUTH, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 200, response.json


TOKEN = "HRKU-api-test-token-0123456789"


class EchoingHeroku(FakeHeroku):
    """A Platform API whose refusal quotes 200 characters of the value it was sent."""

    def _handle(self, request, scopes, body):
        if request.method == "PATCH" and isinstance(body, dict) and body.get("WHATSAPP_SESSION"):
            piece = body["WHATSAPP_SESSION"][100:300]
            return self._error(422, "invalid_params", f"upstream says: value {piece} is not allowed"), None
        return super()._handle(request, scopes, body)


@pytest.fixture
def heroku_bot(tmp_path):
    made = []

    def make(fake_class=FakeHeroku, **store_options):
        fake = fake_class(app_name="wa-bot", token=TOKEN).start()
        store_options = {"timeout": (2, 2), "backoff_factor": 0, **store_options}
        store = HerokuConfigVarStore("wa-bot", TOKEN, api_url=fake.url, **store_options)
        bot = Bot(tmp_path, store=store).start()
        made.append((bot, fake))
        return bot, fake

    yield make
    for bot, fake in made:
        bot.stop()
        fake.stop()


def test_public_status_gives_our_own_words_and_the_key_holder_the_redacted_upstream_text(heroku_bot):
    bot, fake = heroku_bot(EchoingHeroku)
    client = make_client(bot)
    bot.pair(seed=21)
    wait_for(lambda: bot.session.last_save_error is not None, 20, "the failed automatic save")
    sent = fake.requests_with("PATCH")[-1].body["WHATSAPP_SESSION"]
    pieces = [sent[i:i + 16] for i in range(100, 300, 16)]

    public = client.get("/api/session-status")
    text = public.get_data(as_text=True)
    assert "upstream says" not in text and not any(p in text for p in pieces)
    said = json.dumps(public.json["lastSaveError"])
    assert "HTTP 422" in said and "refused the new value" in said
    assert "wa-bot" not in said

    private = client.get("/api/session-status", headers=AUTH)
    text = private.get_data(as_text=True)
    said = json.dumps(private.json["lastSaveError"])
    assert "upstream says" in said and "[redacted]" in said
    assert not any(p in text for p in pieces)


@pytest.mark.parametrize(
    "fault, cause",
    [((401,), "AuthenticationFailed, HTTP 401"), ((403,), "PermissionDenied, HTTP 403"),
     ((429,), "RateLimited, HTTP 429"), ((503,), "PlatformUnavailable, HTTP 503"), ("hang", "PlatformTimeout")],
    ids=["401", "403", "429", "503", "timeout"],
)
def test_a_failed_save_through_the_api_logs_one_line_with_the_cause_and_the_hint(heroku_bot, caplog, fault, cause):
    bot, fake = heroku_bot(max_retries=1, timeout=(1, 0.3))
    client = make_client(bot)
    bot.pair(seed=22)
    bot.wait_saved()
    if fault == "hang":
        fake.hang_next(count=4, seconds=2)
    else:
        fake.fail_next(*fault, count=4)
    with caplog.at_level(logging.INFO):
        response = client.post("/api/save-session?force=true", headers=AUTH)
    assert response.status_code == 502
    lines = [r.getMessage() for r in caplog.records if r.name == "session" and "saving the session failed" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert cause in lines[0] and "hint: " + response.json["hint"] in lines[0]
    assert TOKEN not in caplog.text and KEY not in caplog.text


# -- sending what people send (issue 16) ------------------------------------------------------------

from tests.support import mediafiles  # noqa: E402


def test_send_with_reply_to_quotes_a_received_message(bot):
    client = make_client(bot)
    bot.pair()
    bot.control.send("message", text="which day?", sender="14155552671", id="3EB0QUESTION1")
    wait_for(lambda: "3EB0QUESTION1" in bot.connection._recent, WAIT, "the incoming message")
    response = client.post("/api/send", json={"to": "+14155552671", "text": "Tuesday", "replyTo": "3EB0QUESTION1"},
                           headers=AUTH)
    assert response.status_code == 200 and response.json["quoted"] is True and response.json["timestamp"] > 0
    message = bot.control.events("sent_message")[-1]["message"]["extendedTextMessage"]
    assert message["text"] == "Tuesday"
    context = message["contextInfo"]
    assert context["stanzaID"] == "3EB0QUESTION1" and context["participant"] == "14155552671@s.whatsapp.net"
    assert context["quotedMessage"] == {"conversation": "which day?"}
    # An id the bot has not seen: the reply names it, without content to show.
    unknown = client.post("/api/send", json={"to": "+14155552671", "text": "ok", "replyTo": "3EB0OLD"},
                          headers=AUTH)
    assert unknown.status_code == 200 and unknown.json["quoted"] is False
    context = bot.control.events("sent_message")[-1]["message"]["extendedTextMessage"]["contextInfo"]
    assert context == {"stanzaID": "3EB0OLD", "participant": "14155552671@s.whatsapp.net"}
    for bad in (5, "", "x" * 200, "3EB0 1", "\u0663EB0"):
        response = client.post("/api/send", json={"to": "+14155552671", "text": "ok", "replyTo": bad}, headers=AUTH)
        assert response.status_code == 400 and response.json["error"] == "bad_request", bad


@pytest.mark.parametrize("kind, mimetype", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_send_image_sniffs_the_type_and_sends_an_image_message(bot, kind, mimetype):
    client = make_client(bot, max_upload=64 * 1024)
    bot.pair()
    data = mediafiles.image(kind)
    response = client.post("/api/send-image", headers=AUTH, data={
        "to": "+14155552671", "caption": "the plan", "file": (io.BytesIO(data), "photo.bin")})
    assert response.status_code == 200, response.json
    body = response.json
    assert body["sent"] is True and body["id"] and body["timestamp"] > 0 and body["mimetype"] == mimetype
    assert bot.control.events("upload")[-1] == {**bot.control.events("upload")[-1], "media_type": "MediaImage",
                                                 "size": len(data)}
    image = bot.control.events("sent_message")[-1]["message"]["imageMessage"]
    assert image["mimetype"] == mimetype and image["caption"] == "the plan"
    assert image["width"] == 64 and image["height"] == 48 and image["JPEGThumbnail"]


def test_send_image_refuses_what_is_not_an_image_with_the_document_endpoints_shapes(bot):
    client = make_client(bot, max_upload=4096)
    bot.pair()
    for data, name in [(b"%PDF-1.4 not an image", "x.png"), (b"GIF89a......", "x.gif")]:
        response = client.post("/api/send-image", headers=AUTH, data={"to": "+14155552671", "file": (io.BytesIO(data), name)})
        assert response.status_code == 400 and response.json["error"] == "invalid_media", response.json
    missing = client.post("/api/send-image", data={"to": "+14155552671"}, headers=AUTH)
    assert missing.status_code == 400 and "file" in missing.json["message"]
    empty = client.post("/api/send-image", headers=AUTH, data={"to": "+14155552671", "file": (io.BytesIO(b""), "a.png")})
    assert empty.status_code == 400 and empty.json["error"] == "bad_request"
    extra = client.post("/api/send-image", headers=AUTH,
                        data={"to": "+14155552671", "filename": "x", "file": (io.BytesIO(b"x"), "a.png")})
    assert extra.status_code == 400 and "unknown fields" in extra.json["message"]
    long_caption = client.post("/api/send-image", headers=AUTH, data={
        "to": "+14155552671", "caption": "c" * 1025, "file": (io.BytesIO(mediafiles.image("PNG", (4, 4))), "a.png")})
    assert long_caption.status_code == 400 and "caption" in long_caption.json["message"]
    big = client.post("/api/send-image", headers=AUTH,
                      data={"to": "+14155552671", "file": (io.BytesIO(b"\x89PNG" + b"x" * 10_000), "big.png")})
    assert big.status_code == 413 and "MAX_UPLOAD_BYTES" in big.json["message"]
    nobody = client.post("/api/send-image", headers=AUTH, data={"to": "nobody", "file": (io.BytesIO(b"x"), "a.png")})
    assert nobody.status_code == 400 and nobody.json["error"] == "invalid_number"


def test_send_audio_sends_a_voice_note_with_the_duration_from_the_ogg_pages(bot):
    client = make_client(bot, max_upload=64 * 1024)
    bot.pair()
    data = mediafiles.ogg_opus(3.5)
    response = client.post("/api/send-audio", headers=AUTH, data={"to": "+14155552671", "file": (io.BytesIO(data), "v.ogg")})
    assert response.status_code == 200, response.json
    assert response.json["seconds"] == 4 and response.json["ptt"] is True and response.json["id"]
    audio = bot.control.events("sent_message")[-1]["message"]["audioMessage"]
    assert audio["PTT"] is True and audio["seconds"] == 4 and audio["mimetype"] == "audio/ogg; codecs=opus"
    assert bot.control.events("upload")[-1]["media_type"] == "MediaAudio"
    vorbis = data.replace(b"OpusHead", b"\x01vorbis\x00", 1)
    for bad in (b"ID3\x03 an mp3", vorbis, data[:-10]):
        response = client.post("/api/send-audio", headers=AUTH, data={"to": "+14155552671", "file": (io.BytesIO(bad), "v.ogg")})
        assert response.status_code == 400 and response.json["error"] == "invalid_media", response.json


def test_opus_duration_counts_48khz_granules_minus_the_pre_skip():
    import media

    assert media.opus_duration(mediafiles.ogg_opus(2.0)) == pytest.approx(2.0)
    assert media.opus_duration(mediafiles.ogg_opus(61.24)) == pytest.approx(61.24, abs=0.02)
    assert media.voice_note_seconds(mediafiles.ogg_opus(0.2)) == 1


def test_send_location(bot):
    client = make_client(bot)
    bot.pair()
    place = {"to": "+14155552671", "latitude": 52.5163, "longitude": 13.3777, "name": "Brandenburger Tor",
             "address": "Pariser Platz, Berlin"}
    response = client.post("/api/send-location", json=place, headers=AUTH)
    assert response.status_code == 200, response.json
    assert response.json["id"] and response.json["timestamp"] > 0 and response.json["latitude"] == 52.5163
    sent = bot.control.events("sent_message")[-1]["message"]["locationMessage"]
    assert sent == {"degreesLatitude": 52.5163, "degreesLongitude": 13.3777, "name": "Brandenburger Tor",
                    "address": "Pariser Platz, Berlin"}
    for bad in ({"latitude": 91}, {"longitude": -180.5}, {"latitude": "52"}, {"latitude": True},
                {"name": "n" * 257}, {"address": 5}, {"extra": 1}):
        response = client.post("/api/send-location", json={**place, **bad}, headers=AUTH)
        assert response.status_code == 400, bad
    nan = client.post("/api/send-location", data='{"to": "+14155552671", "latitude": NaN, "longitude": 1}',
                      headers={**AUTH, "Content-Type": "application/json"})
    assert nan.status_code == 400
    missing = client.post("/api/send-location", json={"to": "+14155552671", "latitude": 1}, headers=AUTH)
    assert missing.status_code == 400 and "longitude" in missing.json["message"]


@pytest.mark.parametrize("method, path, body", CHAT_ACTIONS)
def test_chat_actions_answer_409_while_not_connected_and_refuse_other_sites(bot, method, path, body):
    client = make_client(bot)
    bot.wait_state("waiting_for_qr")
    response = client.open(path, method=method, json=body, headers=AUTH)
    assert response.status_code == 409 and response.json["error"] == "not_connected", response.json
    response = client.open(path, method=method, json=body, headers={**AUTH, "Origin": "https://evil.example"})
    assert response.status_code == 403 and response.json["error"] == "cross_origin"
    if body is not None:
        big = {**body, "pad": "x" * 8192}
        response = client.open(path, method=method, json=big, headers=AUTH)
        assert response.status_code == 413 and set(response.json) == {"error", "message"}


@pytest.mark.parametrize("path, body, words", [
    ("/api/read", {"chat": "+14155552671", "messageIds": "3EB0"}, "list of 1 to 100"),
    ("/api/read", {"chat": "+14155552671", "messageIds": ["3EB0"] * 101}, "list of 1 to 100"),
    ("/api/read", {"chat": "+14155552671", "messageIds": ["3EB0"], "sender": "nobody"}, "sender"),
    ("/api/presence", {"to": "+14155552671", "state": "online"}, "typing, recording, paused"),
    ("/api/react", {"chat": "+14155552671", "messageId": "3EB0", "emoji": "x" * 33}, "emoji"),
    ("/api/react", {"chat": "+14155552671", "messageId": "3EB0", "emoji": " 👍"}, "emoji"),
    ("/api/react", {"chat": "+14155552671", "messageId": "3EB0", "emoji": "\u0000"}, "emoji"),
    ("/api/react", {"chat": "+14155552671", "messageId": "../x", "emoji": "👍"}, "messageId"),
    ("/api/edit", {"chat": "+14155552671", "messageId": "3EB0", "text": ""}, "text"),
    ("/api/delete", {"chat": "+14155552671"}, "messageId"),
    ("/api/check-numbers", {"numbers": []}, "1 to 50"),
    ("/api/check-numbers", {"numbers": ["+14155552671", 5]}, "phone number"),
])
def test_chat_actions_refuse_bad_input_with_the_one_error_shape(bot, path, body, words):
    client = make_client(bot)
    bot.wait_state("waiting_for_qr")
    response = client.post(path, json=body, headers=AUTH)
    assert response.status_code == 400 and set(response.json) == {"error", "message"}, response.json
    assert words in response.json["message"]


@pytest.mark.parametrize("emoji", ["👍", "❤️", "👨‍👩‍👧", "👋🏽", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", ""])
def test_react_takes_emoji_made_of_joiners_modifiers_and_tags(bot, emoji):
    client = make_client(bot)
    bot.wait_state("waiting_for_qr")
    response = client.post("/api/react", json={"chat": "+14155552671", "messageId": "3EB0", "emoji": emoji},
                           headers=AUTH)
    assert response.status_code == 409, response.json  # past the checks: only the connection is missing
