"""The HTTP API as a Blueprint of thin views: parse the request, call the session or the connection,
shape the answer. Errors have one JSON shape, `{"error": code, "message": text}`, for every status.
"""

from __future__ import annotations

import logging
import mimetypes
import os
from urllib.parse import quote

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

import apidoc
import apirequest
import media
import media_fetch
import pacing
import recipients
import snapshot
import stores
from auth import is_key_holder, require_key
from clock import iso_now
from logsetup import secret_filter
from qrpage import qr_page
from qrterminal import qr_png
from session_manager import public_view
from snapshot_session import SaveInProgress
from whatsapp import NotConnected
from apirequest import BadRequest
from whatsapp.refused import NotOwnMessage, SenderNeeded, WhatsAppRefused

log = logging.getLogger("app")

MAX_READ_IDS = 100  # message ids one read mark names (whatsmeow sends them in one <receipt>)
MAX_NUMBERS = 50  # numbers one /api/check-numbers asks about (one usync query)
PRESENCE_STATES = ("typing", "recording", "paused")

api = Blueprint("api", __name__)


def error(status: int, code: str, message: str, **extra):
    """The one error shape of the API: {"error": code, "message": text}."""
    return jsonify(error=code, message=message, **extra), status


def _session():
    return current_app.extensions["session"]


def _connection():
    return current_app.extensions["whatsapp"]


# -- views ---------------------------------------------------------------------------------------------

@api.get("/api/health")
def health():
    # No store or WhatsApp call here: it must answer at once, also before the connection is up. A
    # connection that has stopped while the bot is up (its loop ended) is not healthy: 503, so a
    # monitor notices instead of seeing "ok" on a bot that will never reach WhatsApp again.
    connection = _connection()
    if not connection.running():
        return jsonify(ok=False, state=connection.state, timestamp=iso_now(), error="connection_stopped",
                       message="the WhatsApp connection is not running; see the logs"), 503
    return jsonify(ok=True, state=connection.state, timestamp=iso_now())


@api.get("/api/openapi.json")
def openapi_document():
    # Public: it describes the API and holds no secret. Any site's page may read it (Swagger UI run
    # from elsewhere imports it by URL); calling the API from such a page is still refused (auth.py).
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    body = apidoc.served(request.host, forwarded or request.scheme)
    return Response(body, mimetype="application/json", headers={"Access-Control-Allow-Origin": "*"})


@api.get("/api/session-status")
def session_status():
    # Anyone may ask; only a key holder (from the app's own origin) gets the device and the upstream
    # error texts (masked); others get our own words and the HTTP status.
    session = _session()
    body = {**session.status(), **_connection().status(), "timestamp": iso_now()}
    body["storeKind"] = current_app.config["BOT_CONFIG"].session_store
    hub = current_app.extensions.get("events")
    body["lastEvents"] = hub.last_seen() if hasattr(hub, "last_seen") else {}
    if not is_key_holder():
        if body.get("unreachable"):  # what failed, in the library's words: for key holders
            body["unreachable"] = {k: v for k, v in body["unreachable"].items() if k != "detail"}
        return jsonify(public_view(body))
    body["deviceJid"] = session.device_jid()
    for name in ("lastError", "restoreError"):
        if body.get(name):
            body[name] = secret_filter.mask(body[name])
    for name in ("lastSaveError", "unreachable", "lastDisconnect", "lastLogout"):
        if body.get(name):
            body[name] = {k: secret_filter.mask(v) if isinstance(v, str) else v for k, v in body[name].items()}
    return jsonify(body)


@api.post("/api/save-session")
@require_key
def save_session():
    force = apirequest.flag("force")
    try:
        result = _session().save(force=force, reason="API request" + (" (forced)" if force else ""), wait=None)
    except SaveInProgress as exc:
        # Heroku's router cuts a request at 30 s; the save goes on and the status shows how it ends.
        return jsonify(saved=False, pending=True, since=exc.flight.started_at,
                       message="still trying: the save goes on; see GET /api/session-status"), 202
    except snapshot.SnapshotTooLarge as exc:
        return error(413, "snapshot_too_large", str(exc))
    except snapshot.SnapshotError as exc:
        return error(409, "no_session", str(exc))
    except stores.StoreError as exc:
        # The save itself logged one line with the cause and the hint (snapshot_session._fly).
        return error(502, _snake_case(type(exc).__name__), str(exc), hint=exc.hint)
    message = result.get("detail") or (
        "saved; Heroku will restart the dyno to apply the new config var"
        if result["restartExpected"]
        else ("saved" if result["changed"] else "unchanged: the stored session is already this one; no restart")
    )
    return jsonify(saved=result["changed"], message=message, **result)


@api.post("/api/clear-session")
@require_key
def clear_session():
    logged_out = _connection().logout_and_wipe()
    return jsonify(
        cleared=True,
        loggedOut=logged_out,
        message="session wiped; a new QR code will be shown in the logs and at /qr",
    )


@api.get("/qr")
@require_key(basic=True)
def qr():
    page = qr_page(_connection(), _session(), current_app.extensions.get("events"))
    return Response(page, mimetype="text/html", headers={"Cache-Control": "no-store"})


@api.get("/api/qr")
@require_key
def qr_code():
    """The code to scan as data (`?format=png`: as an image), for a script or a phone shortcut."""
    form = request.args.get("format", "json").lower()
    if form not in ("json", "png"):
        raise BadRequest("format must be json or png")
    connection = _connection()
    current = connection.current_qr()
    if current is None:
        state = connection.state
        detail = "the device is logged in" if state == "connected" else "try again in a moment"
        return error(409, "not_waiting_for_qr", f"not waiting for a scan: WhatsApp is {state.replace('_', ' ')} "
                     f"({detail})", state=state)
    headers = {"Cache-Control": "no-store"}
    if form == "png":
        return Response(qr_png(current["code"]), mimetype="image/png",
                        headers={**headers, "X-QR-Expires-At": current["expiresAt"] or ""})
    response = jsonify(state=connection.state, **current)
    response.headers.update(headers)
    return response


@api.post("/api/pair")
@require_key
def pair():
    body = apirequest.json_body({"phone"}, required={"phone"})
    digits = recipients.phone_digits(body["phone"])
    code = _connection().request_pair_code(digits)
    return jsonify(code=code, message="WhatsApp > Linked devices > Link with phone number, then type this code")


@api.post("/api/send")
@require_key
def send():
    body = apirequest.json_body({"to", "text", "replyTo"}, required={"to", "text"})
    text = apirequest.text(body["text"])
    reply_to = body.get("replyTo")
    if reply_to is not None:
        reply_to = apirequest.message_id(reply_to, "replyTo")
    to = recipients.recipient(body["to"])
    return jsonify(sent=True, to=to, **_connection().send_text(to, text, reply_to=reply_to))


@api.post("/api/send-document")
@require_key
def send_document():
    to, upload, data = apirequest.multipart_file({"to", "caption", "filename"}, "the document")
    filename = request.form.get("filename") or upload.filename
    result = _connection().send_document(
        to, data, filename=filename, caption=request.form.get("caption"), mimetype=upload.mimetype
    )
    return jsonify(sent=True, to=to, size=len(data), filename=filename, **result)


@api.post("/api/send-image")
@require_key
def send_image():
    to, _, data = apirequest.multipart_file({"to", "caption"}, "the image (JPEG, PNG or WebP)")
    # The type from the bytes, not from the name or the client's Content-Type; the size from the header,
    # before anything is decoded (413 past media.MAX_IMAGE_PIXELS).
    mimetype = media.check_image(data)["mimetype"]
    caption = apirequest.caption()
    result = _connection().send_image(to, data, mimetype=mimetype, caption=caption)
    return jsonify(sent=True, to=to, size=len(data), mimetype=mimetype, **result)


@api.post("/api/send-audio")
@require_key
def send_audio():
    to, _, data = apirequest.multipart_file({"to"}, "the voice note (an Ogg/Opus file)")
    seconds = media.voice_note_seconds(data)
    result = _connection().send_voice_note(to, data, seconds=seconds)
    return jsonify(sent=True, to=to, size=len(data), seconds=seconds, ptt=True, **result)


@api.post("/api/send-location")
@require_key
def send_location():
    body = apirequest.json_body({"to", "latitude", "longitude", "name", "address"},
                                required={"to", "latitude", "longitude"})
    place = media.location(body["latitude"], body["longitude"], body.get("name"), body.get("address"))
    to = recipients.recipient(body["to"])
    return jsonify(sent=True, to=to, **place, **_connection().send_location(to, **place))


@api.get("/api/media/<message_id>")
@require_key
def media_file(message_id: str):
    """A file a customer sent since the process started: downloaded from WhatsApp, decrypted and
    checked into a temp file (whatsapp/download.py), then streamed from it."""
    if not message_id.isascii() or not message_id.isalnum() \
            or len(message_id) > apirequest.MAX_MESSAGE_ID_CHARS:
        return error(404, "media_not_found", "no such message: ids are letters and digits, as the message event gave them")
    try:
        handle, ref = _connection().open_media(message_id)
    except media_fetch.MediaNotFound as exc:
        return error(404, "media_not_found", str(exc))
    except media_fetch.MediaBusy as exc:
        body, status = error(503, "media_busy", str(exc))
        body.headers["Retry-After"] = "5"
        return body, status
    except media_fetch.MediaDownloadError as exc:
        return error(502, exc.code, exc.message, hint=exc.hint)
    return _file_response(handle, ref)


def _file_response(handle, ref) -> Response:
    """Stream an open (already unlinked) file in 64 KB pieces; it closes when the answer ends or the
    client goes away. The type is the message's own (incoming_media.safe_mimetype), but always as an
    attachment in a sandbox: a customer's "text/html" must never run as a page of this app."""
    size = os.fstat(handle.fileno()).st_size

    def chunks():
        with handle:
            while piece := handle.read(1 << 16):
                yield piece

    name = ref.file_name or f"{ref.kind}{mimetypes.guess_extension(ref.mimetype.split(';')[0]) or ''}"
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in name)[:100]
    headers = {
        "Content-Length": str(size),
        "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name[:200])}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox; default-src 'none'",
        "Cache-Control": "no-store",
    }
    response = Response(chunks(), mimetype=ref.mimetype, headers=headers, direct_passthrough=True)
    response.call_on_close(handle.close)  # also when the body is never read (HEAD, a client gone early)
    return response


# -- chat actions: each goes to the chat like a send, with the same checks, pacing and 409 -------------

@api.post("/api/read")
@require_key
def read():
    body = apirequest.json_body({"chat", "messageIds", "sender"}, required={"chat", "messageIds"})
    ids = body["messageIds"]
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_READ_IDS:
        raise BadRequest(f"messageIds must be a list of 1 to {MAX_READ_IDS} message ids")
    ids = list(dict.fromkeys(apirequest.message_id(i, "messageIds") for i in ids))
    chat = recipients.recipient(body["chat"])
    sender = apirequest.optional_recipient(body.get("sender"), "sender")
    result = _connection().mark_read(chat, ids, sender=sender)
    return jsonify(read=True, chat=chat, messageIds=ids, **result)


@api.post("/api/presence")
@require_key
def presence():
    body = apirequest.json_body({"to", "state"}, required={"to", "state"})
    if body["state"] not in PRESENCE_STATES:
        raise BadRequest(f"state must be one of {', '.join(PRESENCE_STATES)}")
    to = recipients.recipient(body["to"])
    return jsonify(to=to, state=body["state"], **_connection().chat_presence(to, body["state"]))


@api.post("/api/react")
@require_key
def react():
    body = apirequest.json_body({"chat", "messageId", "emoji", "sender"}, required={"chat", "messageId", "emoji"})
    emoji = apirequest.emoji(body["emoji"])
    chat, message_id = recipients.recipient(body["chat"]), apirequest.message_id(body["messageId"], "messageId")
    sender = apirequest.optional_recipient(body.get("sender"), "sender")
    result = _connection().react(chat, message_id, emoji, sender=sender)
    return jsonify(reacted=bool(emoji), chat=chat, messageId=message_id, emoji=emoji, **result)


@api.post("/api/edit")
@require_key
def edit():
    body = apirequest.json_body({"chat", "messageId", "text"}, required={"chat", "messageId", "text"})
    text = apirequest.text(body["text"])
    chat, message_id = recipients.recipient(body["chat"]), apirequest.message_id(body["messageId"], "messageId")
    return jsonify(edited=True, chat=chat, messageId=message_id, **_connection().edit(chat, message_id, text))


@api.post("/api/delete")
@require_key
def delete():
    body = apirequest.json_body({"chat", "messageId"}, required={"chat", "messageId"})
    chat, message_id = recipients.recipient(body["chat"]), apirequest.message_id(body["messageId"], "messageId")
    return jsonify(deleted=True, chat=chat, messageId=message_id, **_connection().delete_for_everyone(chat, message_id))


@api.post("/api/check-numbers")
@require_key
def check_numbers():
    body = apirequest.json_body({"numbers"}, required={"numbers"})
    numbers = body["numbers"]
    if not isinstance(numbers, list) or not 1 <= len(numbers) <= MAX_NUMBERS:
        raise BadRequest(f"numbers must be a list of 1 to {MAX_NUMBERS} phone numbers in international form")
    digits = list(dict.fromkeys(recipients.phone_digits(n) for n in numbers))
    return jsonify(numbers=_connection().on_whatsapp(digits))


@api.get("/api/groups")
@require_key
def groups():
    return jsonify(groups=_connection().joined_groups())


# -- errors ----------------------------------------------------------------------------------------------

def register_error_handlers(app: Flask) -> None:
    """JSON for every failure, the app's own 404/405 included (a Blueprint sees only its routes)."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        # 404, 405, 413 and friends: JSON like every other answer, never Werkzeug's HTML page.
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if exc.code == 413:
            limit = current_app.config["MAX_CONTENT_LENGTH"]
            message = f"the request is larger than {limit} bytes (MAX_UPLOAD_BYTES)"
        response, status = error(exc.code or 500, code, message)
        # What the exception's own answer says in headers stays: a 405's `Allow` (RFC 9110 15.5.6).
        response.headers.extend((k, v) for k, v in exc.get_headers() if k.lower() != "content-type")
        return response, status

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest):
        return error(400, "bad_request", str(exc))

    @app.errorhandler(media.ImageTooLarge)
    def image_too_large(exc: media.ImageTooLarge):
        return error(413, "image_too_large", str(exc))

    @app.errorhandler(media.InvalidMedia)
    def bad_media(exc: media.InvalidMedia):
        return error(400, "invalid_media", str(exc))

    @app.errorhandler(recipients.InvalidRecipient)
    def bad_recipient(exc: recipients.InvalidRecipient):
        return error(400, "invalid_number", str(exc))

    @app.errorhandler(pacing.TooFast)
    def too_fast(exc: pacing.TooFast):
        body, status = error(429, "rate_limited", str(exc), retryAfter=exc.retry_after)
        body.headers["Retry-After"] = str(exc.retry_after)
        return body, status

    @app.errorhandler(NotOwnMessage)
    def not_own_message(exc: NotOwnMessage):
        return error(400, "not_own_message", str(exc))

    @app.errorhandler(SenderNeeded)
    def sender_needed(exc: SenderNeeded):
        return error(400, "bad_request", str(exc))

    @app.errorhandler(WhatsAppRefused)
    def whatsapp_refused(exc: WhatsAppRefused):
        return error(502, "whatsapp_error", str(exc))

    @app.errorhandler(NotConnected)
    def not_connected(exc: NotConnected):
        return error(409, "not_connected", str(exc))

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception):
        log.exception("unhandled error in a request")
        return error(500, "internal_error", "the bot hit an unexpected error; see heroku logs")


def _snake_case(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
