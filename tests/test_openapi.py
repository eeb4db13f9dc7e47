"""The API's OpenAPI 3.1 document (openapi.yaml, served at GET /api/openapi.json) tells the truth:
it is valid, it names exactly the app's routes, its limits are the code's, its webhooks are the events
the bot sends, and every answer the tests receive fits it (tests/support/openapi_check.py). Against a
live bot (the simulator, Schemathesis): tests/test_openapi_live.py.
"""

from __future__ import annotations

import http.server
import io
import json
import re
import threading
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from openapi_spec_validator import OpenAPIV31SpecValidator

import apirequest
import apidoc
import events
import media
import stores
import whatsapp
import whatsapp.states
from app import create_app
from config import Config
from tests.support import mediafiles
from tests.support.botkit import Bot
from tests.support.harness import ROOT, free_port, wait_for
from tests.support.openapi_check import AnswerOutsideSchema, SchemaCheckedClient, check_response, event_validator

KEY = "openapi-test-key-0123456789"
AUTH = {"X-Api-Key": KEY}
DOC = apidoc.document()
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture
def bot(tmp_path):
    bot = Bot(tmp_path).start()
    yield bot
    bot.stop()


def make_app(bot, api_key=KEY, max_upload=64 * 1024):
    config = Config(api_key=api_key, session_dir=bot.session_dir, max_upload_bytes=max_upload)
    app = create_app(config, session=bot.session, connection=bot.connection)
    app.test_client_class = SchemaCheckedClient
    return app


# -- the document ---------------------------------------------------------------------------------------

def test_the_document_is_valid_openapi_3_1():
    OpenAPIV31SpecValidator(DOC).validate()
    assert DOC["openapi"].startswith("3.1.")


def test_the_served_document_is_public_json_naming_the_address_it_was_fetched_from(bot):
    # No API_KEY at all: protected endpoints answer 503, the document still answers.
    client = make_app(bot, api_key=None).test_client()
    response = client.get("/api/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.headers["Access-Control-Allow-Origin"] == "*"  # Swagger UI elsewhere may import it
    served = response.json
    OpenAPIV31SpecValidator(served).validate()
    assert served["servers"] == [{"url": "http://localhost", "description": "this bot"}]
    assert {k: v for k, v in served.items() if k != "servers"} == DOC
    assert list(served)[:2] == ["openapi", "info"]  # in the YAML's order, not sorted
    behind_router = client.get("/api/openapi.json", headers={"Host": "my-bot.herokuapp.com",
                                                             "X-Forwarded-Proto": "https"})
    assert behind_router.json["servers"][0]["url"] == "https://my-bot.herokuapp.com"
    text = response.get_data(as_text=True)
    assert KEY not in text


def _flask_routes(app) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every route the app serves: `<id>` and `<int:id>` become `{id}`."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        routes |= {(method.lower(), path) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return routes


def _documented_routes(doc: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, item in doc["paths"].items() for method in item if method in METHODS}


def test_every_flask_route_is_described_and_the_document_names_no_other(bot):
    routes = _flask_routes(make_app(bot))
    documented = _documented_routes(DOC)
    assert not routes - documented, f"routes missing from openapi.yaml: {sorted(routes - documented)}"
    assert not documented - routes, f"openapi.yaml names routes the app does not have: {sorted(documented - routes)}"


def test_the_route_check_fails_on_a_missing_or_an_invented_route(bot):
    app = make_app(bot)
    app.add_url_rule("/api/new-thing/<int:thing_id>", "new_thing", lambda thing_id: "", methods=["PUT"])
    assert ("put", "/api/new-thing/{thing_id}") in _flask_routes(app) - _documented_routes(DOC)
    invented = {**DOC, "paths": {**DOC["paths"], "/api/nothing": {"get": {"responses": {}}}}}
    assert _documented_routes(invented) - _flask_routes(make_app(bot)) == {("get", "/api/nothing")}


def _schema(pointer: str) -> dict:
    node = DOC
    for part in pointer.strip("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _body_schema(path: str, content: str = "application~1json") -> dict:
    return _schema(f"paths/{path.replace('/', '~1')}/post/requestBody/content/{content}/schema")


def test_the_documents_limits_and_names_are_the_codes():
    send = _body_schema("/api/send")["properties"]
    assert send["text"]["maxLength"] == apirequest.MAX_TEXT_CHARS
    assert send["replyTo"]["maxLength"] == apirequest.MAX_MESSAGE_ID_CHARS
    image = _body_schema("/api/send-image", "multipart~1form-data")["properties"]
    assert image["caption"]["maxLength"] == apirequest.MAX_CAPTION_CHARS
    place = _body_schema("/api/send-location")["properties"]
    assert place["name"]["maxLength"] == media.MAX_LOCATION_NAME
    assert place["address"]["maxLength"] == media.MAX_LOCATION_ADDRESS
    states = {value for name, value in vars(whatsapp.states).items() if name.isupper() and isinstance(value, str)
              and re.fullmatch(r"[a-z_]+", value) and name == value.upper()}
    assert set(DOC["components"]["schemas"]["State"]["enum"]) == states
    assert set(DOC["webhooks"]) == set(events.NAMES), "every event the bot sends, and no other, is a webhook"


# -- webhook events ---------------------------------------------------------------------------------------

def _readme_event_examples() -> dict[str, dict]:
    """The `data` example of each row of the README's Events table."""
    examples = {}
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Events\n", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        match = re.match(r"\| `(\w+)` \|[^|]*\| `(\{.*?\})`", line)
        if match:
            examples[match.group(1)] = json.loads(match.group(2))
    return examples


def test_the_readmes_event_examples_fit_the_documented_webhooks():
    examples = _readme_event_examples()
    assert set(examples) == set(events.NAMES)
    for name, data in examples.items():
        payload = events.envelope(name, data)
        if name == events.MESSAGE:
            payload = {**data, **payload}
        event_validator(name).validate(payload)
    wrong = events.envelope(events.RECEIPT, {**examples["receipt"], "status": "lost"})
    assert not event_validator(events.RECEIPT).is_valid(wrong)


class _Recorder:
    """Stands in for the webhook queue: every payload the connection and the session hand it."""

    def __init__(self) -> None:
        self.payloads: list[dict] = []

    def emit(self, event, data=None):
        self.payloads.append(events.envelope(event, data))

    def enqueue(self, payload):
        self.payloads.append(payload)

    def names(self) -> set[str]:
        return {p["event"] for p in self.payloads}

    def status(self):
        return {}

    def stop(self, timeout=0):
        pass


class _FullDisk:
    """A local store whose writes fail as on a full disk (a save_failed event)."""

    def __init__(self, store) -> None:
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def save(self, text, **kwargs):
        raise stores.LocalStoreError("could not write the snapshot: disk full")


def _peer_message(message, message_id: str):
    """A peer's neonize Message event as whatsmeow hands it over (tests/test_incoming_events.py's shape)."""
    from neonize.proto.Neonize_pb2 import JID, Message as MessageEv

    peer = JID(User="4915112345678", Server="s.whatsapp.net")
    ev = MessageEv(Message=message)
    ev.Info.ID = message_id
    ev.Info.Timestamp = 1764112744123  # milliseconds, as neonize gives them
    ev.Info.MessageSource.Sender.CopyFrom(peer)
    ev.Info.MessageSource.Chat.CopyFrom(peer)
    return ev


def _peer_news(connection) -> None:
    """A photo, a reaction, an edit, a delete, a call and a message that could not be decrypted, through
    the connection's own handlers (what the scripted client cannot send)."""
    from neonize.proto.Neonize_pb2 import CallOffer, Node
    from neonize.proto.waCommon.WACommon_pb2 import MessageKey
    from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import (
        ExtendedTextMessage, ImageMessage, Message, ProtocolMessage, ReactionMessage)

    key = MessageKey(remoteJID="4915112345678@s.whatsapp.net", ID="3EB0PHOTO")
    photo = ImageMessage(mimetype="image/jpeg", caption="the part", fileLength=1234, width=64, height=48,
                         mediaKey=b"k" * 32, directPath="/v/t62/x", fileSHA256=b"s" * 32, fileEncSHA256=b"e" * 32)
    edit = ProtocolMessage(key=key, type=ProtocolMessage.MESSAGE_EDIT,
                           editedMessage=Message(extendedTextMessage=ExtendedTextMessage(text="at 6")))
    for message, message_id in [
        (Message(imageMessage=photo), "3EB0PHOTO"),
        (Message(reactionMessage=ReactionMessage(key=key, text="\U0001f44d")), "3EB0REACT"),
        (Message(protocolMessage=edit), "3EB0EDIT"),
        (Message(protocolMessage=ProtocolMessage(key=key, type=ProtocolMessage.REVOKE)), "3EB0DEL"),
    ]:
        connection._on_message(None, _peer_message(message, message_id))
    offer = CallOffer(data=Node(Tag="offer", Nodes=[Node(Tag="audio")]))
    offer.basicCallMeta.callID = "CALL1"
    offer.basicCallMeta.timestamp = 1764112900000
    offer.basicCallMeta.callCreator.User, offer.basicCallMeta.callCreator.Server = "4915112345678", "s.whatsapp.net"
    connection._on_call_offer(None, offer)
    from neonize.events import UndecryptableMessageEv

    lost = UndecryptableMessageEv(IsUnavailable=False)
    lost.Info.CopyFrom(_peer_message(Message(), "3EB0LOST").Info)
    connection._on_undecryptable(None, lost)


def test_the_events_the_bot_sends_fit_their_webhooks(tmp_path):
    """The bot's own payloads, from a scripted WhatsApp connection: an outage, a scan, messages (a photo among
    them), reactions, edits, deletes, a call, an undecryptable message, receipts, a lost connection, a ban, a failed save. (logged_out: in the Schemathesis run below, which clears the
    session; client_outdated: the README's example above.)"""
    bot = Bot(tmp_path, store=_FullDisk(stores.LocalFileStore(tmp_path / "session.snapshot")))
    recorder = _Recorder()
    bot.connection._webhook = recorder
    bot.session.notify = recorder.emit
    bot.connection._outage.grace = 0.2  # UNREACHABLE_GRACE, shortened
    bot.control.update_world(unreachable=True)  # WhatsApp out of reach from the start
    bot.start()
    try:
        wait_for(lambda: "unreachable" in recorder.names(), 10, "the unreachable event")
        bot.control.update_world(unreachable=False)
        bot.pair(seed=35)
        wait_for(lambda: "save_failed" in recorder.names(), 10, "the failed save")
        bot.control.send("message", text="hi", sender="4915112345678", id="3EB0INCOMING")
        sent = bot.connection.send_text("4915112345678", "hello")
        bot.control.send("receipt", ids=[sent["id"]], type=1, sender="4915112345678")  # READ
        bot.control.send("drop")
        wait_for(lambda: {"message", "receipt", "disconnected"} <= recorder.names(), 10, "the events")
        _peer_news(bot.connection)
        bot.control.update_world(ban_seconds=120)
        bot.control.send("connect_failure")  # the next connect meets the ban
        wait_for(lambda: "temporarily_banned" in recorder.names(), 10, "the ban")
        wait_for(lambda: "call" in recorder.names(), 10, "the call event")
    finally:
        bot.stop()
    expected = set(events.NAMES) - {events.CLIENT_OUTDATED, events.LOGGED_OUT}
    assert recorder.names() >= expected, expected - recorder.names()
    for payload in recorder.payloads:
        event_validator(payload["event"]).validate(payload)
    photo = [p["data"]["media"] for p in recorder.payloads if p["event"] == "message" and p["data"]["media"]]
    assert photo and photo[0]["url"] == "/api/media/3EB0PHOTO"


# -- answers the tests receive ------------------------------------------------------------------------------

def test_the_answer_check_fails_an_answer_outside_the_schema(bot):
    app = make_app(bot)
    response = FlaskClient(app, app.response_class).get("/api/health")  # unchecked: mutated below
    check_response(response)
    response.set_data(json.dumps({"ok": True, "timestamp": "2026-12-03T05:00:00Z"}))  # no state
    with pytest.raises(AnswerOutsideSchema, match="state"):
        check_response(response)
    response.status_code = 418
    with pytest.raises(AnswerOutsideSchema):
        check_response(response)


class _MediaHost:
    """WhatsApp's media host on loopback: GET /<name> answers the encrypted file stored under it, 404
    for any other name (a file WhatsApp no longer has)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                body = host.files.get(self.path.lstrip("/").split("?")[0])
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def ref(self, tmp_path, name: str, data: bytes):
        """The MediaRef of a peer's photo of `data`, encrypted as a phone does and served as `name`."""
        from incoming_media import PARTS, MediaRef
        from tests.wasim.download import PeerMediaHost

        upload = PeerMediaHost(str(tmp_path / "peer")).upload("imageMessage", data)
        self.files[name] = Path(upload.blob_path).read_bytes()
        info, mms = PARTS["imageMessage"]
        return MediaRef(kind="image", mimetype="image/png", file_name=None,
                        url=f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}", direct_path="",
                        media_key=upload.media_key, file_sha256=upload.file_sha256,
                        file_enc_sha256=upload.file_enc_sha256, size=upload.file_length, key_info=info,
                        mms_type=mms)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_every_operation_answers_within_its_schema_in_success_and_in_error(bot, tmp_path):
    """One success and one error answer for every operation the document names (each checked by
    SchemaCheckedClient as it arrives)."""
    app = make_app(bot)
    client = app.test_client()
    seen: set[tuple[str, str, int]] = set()
    adapter = app.url_map.bind("localhost")

    def call(method, path, **kwargs):
        response = client.open(path, method=method, **kwargs)
        rule, _ = adapter.match(path.split("?")[0], method=method, return_rule=True)
        seen.add((method.lower(), re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule), response.status_code))
        return response

    bot.wait_state("waiting_for_qr")
    # The chat actions' success needs a WhatsApp that answers them (the scripted client does not): see
    # the simulator test below. Their errors here: 400 for an empty body, 409 while not connected.
    chat_actions = {("post", "/api/read"), ("post", "/api/presence"), ("post", "/api/react"), ("post", "/api/edit"),
                    ("post", "/api/delete"), ("post", "/api/check-numbers"), ("get", "/api/groups")}
    for method, path in sorted(chat_actions):
        assert call(method.upper(), path, json={} if method == "post" else None, headers=AUTH).status_code in (400, 409)
    call("GET", "/api/health")
    call("GET", "/api/openapi.json")
    call("GET", "/api/session-status")
    call("GET", "/api/session-status", headers=AUTH)
    assert call("GET", "/qr", headers=AUTH).status_code == 200
    assert call("GET", "/qr").status_code == 401
    assert call("GET", "/api/qr", headers=AUTH).status_code == 200
    assert call("GET", "/api/qr?format=png", headers=AUTH).status_code == 200
    assert call("GET", "/api/qr?format=gif", headers=AUTH).status_code == 400
    assert call("POST", "/api/save-session", headers=AUTH).status_code == 409
    assert call("POST", "/api/pair", json={"phone": "+14155552671"}, headers=AUTH).status_code == 200
    assert call("POST", "/api/pair", json={"phone": "12"}, headers=AUTH).status_code == 400
    assert call("POST", "/api/send", json={"to": "+14155552671", "text": "hi"}, headers=AUTH).status_code == 409
    bot.pair(seed=31)
    bot.wait_saved()
    assert call("GET", "/api/qr", headers=AUTH).status_code == 409
    assert call("POST", "/api/save-session?force=true", headers=AUTH).status_code == 200
    assert call("POST", "/api/save-session", headers={"Origin": "https://evil.example", **AUTH}).status_code == 403
    call("GET", "/api/session-status", headers=AUTH)
    assert call("POST", "/api/send", json={"to": "+14155552671", "text": "hi", "replyTo": "3EB0X"},
                headers=AUTH).status_code == 200
    assert call("POST", "/api/send", json={"to": "+14155552671", "text": " "}, headers=AUTH).status_code == 400
    document = {"to": "+14155552671", "caption": "invoice", "file": (io.BytesIO(b"%PDF-1.4 tiny"), "inv.pdf")}
    assert call("POST", "/api/send-document", data=document, headers=AUTH).status_code == 200
    too_big = {"to": "+14155552671", "file": (io.BytesIO(b"x" * 70_000), "big.bin")}
    assert call("POST", "/api/send-document", data=too_big, headers=AUTH).status_code == 413
    image = {"to": "+14155552671", "file": (io.BytesIO(mediafiles.image("PNG")), "a.png")}
    assert call("POST", "/api/send-image", data=image, headers=AUTH).status_code == 200
    not_image = {"to": "+14155552671", "file": (io.BytesIO(b"%PDF"), "a.png")}
    assert call("POST", "/api/send-image", data=not_image, headers=AUTH).status_code == 400
    voice = {"to": "+14155552671", "file": (io.BytesIO(mediafiles.ogg_opus(1.5)), "v.ogg")}
    assert call("POST", "/api/send-audio", data=voice, headers=AUTH).status_code == 200
    assert call("POST", "/api/send-audio", data={"to": "+14155552671"}, headers=AUTH).status_code == 400
    place = {"to": "+14155552671", "latitude": 52.5, "longitude": 13.4, "name": "Tor"}
    assert call("POST", "/api/send-location", json=place, headers=AUTH).status_code == 200
    assert call("POST", "/api/send-location", json={**place, "latitude": 91}, headers=AUTH).status_code == 400
    assert call("POST", "/api/pair", json={"phone": "+14155552671"}, headers=AUTH).status_code == 409
    host = _MediaHost()
    try:
        photo = mediafiles.image("PNG")
        bot.connection._media.put("3EB0PHOTO", host.ref(tmp_path, "photo", photo))
        gone = host.ref(tmp_path, "gone", photo)
        bot.connection._media.put("3EB0GONE", gone)
        host.files.pop("gone")
        fetched = call("GET", "/api/media/3EB0PHOTO", headers=AUTH)
        assert fetched.status_code == 200 and fetched.data == photo and fetched.mimetype == "image/png"
        assert call("GET", "/api/media/3EB0GONE", headers=AUTH).json["error"] == "media_gone"
        assert call("GET", "/api/media/3EB0NOSUCH", headers=AUTH).status_code == 404
    finally:
        host.stop()
    assert call("POST", "/api/clear-session", headers=AUTH).status_code == 200
    assert call("POST", "/api/clear-session", headers={"X-Api-Key": "wrong"}).status_code == 401
    # A path or a method the document does not name: JSON 404 / 405 (checked by the client too).
    assert client.get("/api/nothing-here").status_code == 404
    assert client.delete("/api/send", headers=AUTH).status_code == 405

    unanswered = {(method, path) for method, path in _documented_routes(DOC) - chat_actions
                  if not any(m == method and p == path and s < 300 for m, p, s in seen)}
    public = {("get", "/api/health"), ("get", "/api/openapi.json"), ("get", "/api/session-status")}
    no_error = {(m, p) for m, p in _documented_routes(DOC) - public
                if not any(m2 == m and p2 == p and s >= 400 for m2, p2, s in seen)}
    assert not unanswered and not no_error, (unanswered, no_error)


def test_the_status_and_save_answers_on_postgres_fit_the_document(pg_server, database_url, tmp_path):
    """The live PostgreSQL session's own status and save answers, reachable or not (no device yet)."""
    from live_session import LiveDatabaseSession
    from pgsession import PostgresSession

    unreachable = pg_server.url("postgres").replace(f":{pg_server.port}/", f":{free_port()}/")
    for url in (database_url, unreachable):
        session = LiveDatabaseSession(PostgresSession(url))
        connection = whatsapp.Connection(session, client_factory=lambda database: None)  # not started
        config = Config(api_key=KEY, session_store="postgres", database_url=url, session_dir=tmp_path / "unused")
        app = create_app(config, session=session, connection=connection)
        app.test_client_class = SchemaCheckedClient
        client = app.test_client()
        for headers in ({}, AUTH):
            body = client.get("/api/session-status", headers=headers).json
            assert body["storeKind"] == "postgres" and pg_server.password not in json.dumps(body)
        assert client.post("/api/save-session", headers=AUTH).status_code == 409


# -- what the answer check and Schemathesis found ------------------------------------------------------------

def test_a_method_a_path_does_not_take_is_a_json_405_naming_the_ones_it_does(bot):
    # Found by the answer check (and Schemathesis's unsupported_method): the JSON 405 had lost `Allow`.
    response = make_app(bot).test_client().delete("/api/send", headers=AUTH)
    assert response.status_code == 405 and response.json["error"] == "method_not_allowed"
    assert response.mimetype == "application/json"
    assert "POST" in {m.strip() for m in response.headers["Allow"].split(",")}


def test_save_session_refuses_a_force_value_it_does_not_know(bot):
    # Found by Schemathesis: `?force=00000000000000000` (or a typo, `ture`) quietly ran a save that was
    # not forced; now it is a 400 that says which values count.
    client = make_app(bot).test_client()
    bot.pair(seed=32)
    bot.wait_saved()
    saves = len(bot.store.saves)
    for value in ("00000000000000000", "ture", "2", "on"):
        response = client.post(f"/api/save-session?force={value}", headers=AUTH)
        assert response.status_code == 400 and response.json["error"] == "bad_request", value
        assert "force must be one of" in response.json["message"]
    assert len(bot.store.saves) == saves, "a refused request saves nothing"
    for value, forced in (("TRUE", True), ("yes", True), ("1", True), ("0", False), ("no", False), ("", False)):
        response = client.post(f"/api/save-session?force={value}", headers=AUTH)
        assert response.status_code == 200 and response.json["reason"].endswith("(forced)") == forced, value
