"""The HTTP API: `create_app()` builds the bot and its thin JSON views; gunicorn calls it (Procfile).

Importing this module builds nothing: no configuration is read and no store is created until
`create_app()` runs.

Creating the app starts nothing: the WhatsApp connection is started by gunicorn's `post_worker_init`
hook (see gunicorn.conf.py), in the one worker, after the port is bound. So `/api/health` answers
within Heroku's 60 s boot limit however long WhatsApp takes.
"""

from __future__ import annotations

import base64
import hmac
import html
import json
import logging
from functools import wraps
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

import config as config_module
import recipients
import snapshot
import stores
import whatsapp
from clock import iso_now
from logsetup import configure_logging, secret_filter
from qrterminal import qr_svg
from session_manager import Session, build_session, public_view
from snapshot_session import SaveInProgress
from whatsapp import CONNECTED, WAITING_FOR_QR, Connection, NotConnected, load_client_factory

log = logging.getLogger("app")

MAX_TEXT_CHARS = 65536  # WhatsApp's own limit for a text message


class BadRequest(ValueError):
    """The request's content is wrong; the message says what to change."""


def error(status: int, code: str, message: str, **extra):
    """The one error shape of the API: {"error": code, "message": text}."""
    return jsonify(error=code, message=message, **extra), status


def create_app(
    cfg: config_module.Config | None = None,
    *,
    session: Session | None = None,
    connection: Connection | None = None,
) -> Flask:
    # A local run without API_KEY gets a generated key in a private file (config.with_local_api_key).
    cfg = cfg or config_module.with_local_api_key(config_module.load_config())
    # On Heroku the log router stamps each line with the time; locally the bot's lines carry it.
    configure_logging(cfg.log_level, cfg.secrets(), timestamps=not cfg.on_heroku)
    log.info("starting: %s", cfg.features())
    for warning in cfg.warnings():
        log.warning("%s", warning)
    if cfg.generated_key_file:
        log.info(
            "API_KEY is not set: this local run uses a random key kept in %s; open http://localhost:%d/qr "
            "in a browser with any user name and that file's content as password (`cat %s`), or send it as "
            "X-Api-Key; set API_KEY to choose your own",
            cfg.generated_key_file, cfg.port, cfg.generated_key_file.name,
        )

    if session is None:
        session = build_session(cfg)
    if connection is None:
        webhook = None
        if cfg.webhook_url:
            from webhook import WebhookSender

            webhook = WebhookSender(cfg.webhook_url, cfg.webhook_secret)
            webhook.start()
        connection = Connection(
            session,
            client_factory=load_client_factory(cfg.client_factory),
            webhook=webhook,
            pair_phone=cfg.pair_phone,
            max_connects=cfg.max_connects_per_worker
            or whatsapp.DEFAULT_MAX_CONNECTS["postgres" if cfg.session_store == "postgres" else "sqlite"],
        )

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_upload_bytes
    app.config["BOT_CONFIG"] = cfg
    app.extensions["whatsapp"] = connection
    app.extensions["session"] = session
    _register_errors(app)
    _register_views(app, cfg, session, connection)
    return app


def _register_errors(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        # 404, 405, 413 and friends: JSON like every other answer, never Werkzeug's HTML page.
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if exc.code == 413:
            limit = current_app.config["MAX_CONTENT_LENGTH"]
            message = f"the request is larger than {limit} bytes (MAX_UPLOAD_BYTES)"
        return error(exc.code or 500, code, message)

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest):
        return error(400, "bad_request", str(exc))

    @app.errorhandler(recipients.InvalidRecipient)
    def bad_recipient(exc: recipients.InvalidRecipient):
        return error(400, "invalid_number", str(exc))

    @app.errorhandler(NotConnected)
    def not_connected(exc: NotConnected):
        return error(409, "not_connected", str(exc))

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception):
        log.exception("unhandled error in a request")
        return error(500, "internal_error", "the bot hit an unexpected error; see heroku logs")


def _register_views(app: Flask, cfg: config_module.Config, session: Session, connection: Connection):
    require_key = _key_checker(cfg.api_key, on_heroku=cfg.on_heroku)

    @app.get("/api/health")
    def health():
        # No store or WhatsApp call here: it must answer at once, also before the connection is up.
        return jsonify(ok=True, state=connection.state, timestamp=iso_now())

    @app.get("/api/session-status")
    def session_status():
        # Anyone may ask; only a key holder (from the app's own origin) gets the device and the
        # upstream error texts (masked); others get our own words and the HTTP status.
        full = bool(cfg.api_key) and _has_key(cfg.api_key) and _same_origin()
        body = {**session.status(), **connection.status(), "timestamp": iso_now()}
        body["storeKind"] = cfg.session_store
        if not full:
            return jsonify(public_view(body))
        body["deviceJid"] = session.device_jid()
        for name in ("lastError", "restoreError"):
            if body.get(name):
                body[name] = secret_filter.mask(body[name])
        if body.get("lastSaveError"):
            body["lastSaveError"] = {k: secret_filter.mask(v) if isinstance(v, str) else v
                                     for k, v in body["lastSaveError"].items()}
        return jsonify(body)

    @app.post("/api/save-session")
    @require_key
    def save_session():
        force = request.args.get("force", "").lower() in ("1", "true", "yes")
        try:
            result = session.save(force=force, reason="API request" + (" (forced)" if force else ""),
                                  wait=None)
        except SaveInProgress as exc:
            # Heroku's router cuts a request at 30 s; the save goes on and status shows how it ends.
            return jsonify(saved=False, pending=True, since=exc.flight.started_at,
                           message="still trying: the save goes on; see GET /api/session-status"), 202
        except snapshot.SnapshotTooLarge as exc:
            return error(413, "snapshot_too_large", str(exc))
        except snapshot.SnapshotError as exc:
            return error(409, "no_session", str(exc))
        except stores.StoreError as exc:
            # The save itself logged one line with the cause and the hint (snapshot_session._fly).
            return error(502, _store_error_code(exc), str(exc), hint=exc.hint)
        message = result.get("detail") or (
            "saved; Heroku will restart the dyno to apply the new config var"
            if result["restartExpected"]
            else ("saved" if result["changed"] else "unchanged: the stored session is already this one")
        )
        return jsonify(saved=result["changed"], message=message, **result)

    @app.post("/api/clear-session")
    @require_key
    def clear_session():
        logged_out = connection.logout_and_wipe()
        return jsonify(
            cleared=True,
            loggedOut=logged_out,
            message="session wiped; a new QR code will be shown in the logs and at /qr",
        )

    @app.get("/qr")
    @require_key(basic=True)
    def qr_page():
        return Response(_qr_html(connection), mimetype="text/html", headers={"Cache-Control": "no-store"})

    @app.post("/api/pair")
    @require_key
    def pair():
        body = _json_body({"phone"}, required={"phone"})
        digits = recipients.phone_digits(body["phone"])
        code = connection.request_pair_code(digits)
        return jsonify(code=code, message="WhatsApp > Linked devices > Link with phone number, then type this code")

    @app.post("/api/send")
    @require_key
    def send():
        body = _json_body({"to", "text"}, required={"to", "text"})
        text = body["text"]
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("text must be a non-empty string")
        if len(text) > MAX_TEXT_CHARS:
            raise BadRequest(f"text is longer than {MAX_TEXT_CHARS} characters")
        to = recipients.recipient(body["to"])
        return jsonify(sent=True, to=to, **connection.send_text(to, text))

    @app.post("/api/send-document")
    @require_key
    def send_document():
        unknown = (set(request.form) - {"to", "caption", "filename"}) | (set(request.files) - {"file"})
        if unknown:
            raise BadRequest(f"unknown fields: {_names(unknown)}")
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            raise BadRequest("a multipart field 'file' with the document is required")
        to = recipients.recipient(request.form.get("to", ""))
        data = upload.read()
        if not data:
            raise BadRequest("the file is empty")
        filename = request.form.get("filename") or upload.filename
        result = connection.send_document(
            to, data, filename=filename, caption=request.form.get("caption"), mimetype=upload.mimetype
        )
        return jsonify(sent=True, to=to, size=len(data), filename=filename, **result)


def _key_checker(api_key: str | None, *, on_heroku: bool = True):
    """Decorator factory for protected views: 503 when no API_KEY is configured, 403 for a request
    from another site's page, 401 for a wrong or missing key.

    `require_key(view)` takes the key in `Authorization: Bearer` or `X-Api-Key` only: headers a page on
    another site cannot make a browser send. `require_key(view, basic=True)` (for `GET /qr`, which a
    person opens in a browser) also takes HTTP Basic with the key as password. A browser resends Basic
    credentials on its own, to any request for this host, whoever's page makes it; so Basic never
    authorizes a state-changing endpoint, and every protected endpoint refuses a request whose
    `Origin` (set by browsers on cross-site requests) is not this app.
    """

    def require_key(view=None, *, basic: bool = False):
        if view is None:
            return lambda v: require_key(v, basic=basic)

        @wraps(view)
        def wrapper(*args, **kwargs):
            if not api_key:
                how = (
                    "heroku config:set API_KEY=$(openssl rand -hex 24)" if on_heroku
                    else "API_KEY=$(openssl rand -hex 24) in the environment of gunicorn, then restart it"
                )
                return error(503, "api_key_not_set", f"set API_KEY to use this endpoint ({how})")
            if not _same_origin():
                return error(
                    403, "cross_origin",
                    "this endpoint refuses requests made by a page of another site (its Origin header is "
                    "not this app's address)",
                )
            if not _has_key(api_key, basic=basic):
                response, status = error(
                    401, "unauthorized",
                    "send the API key as 'Authorization: Bearer <API_KEY>' or 'X-Api-Key'"
                    + (" (a browser: any user name, the key as password)" if basic else ""),
                )
                # Basic only where it is accepted: it lets a browser on /qr ask for the key.
                response.headers["WWW-Authenticate"] = (
                    'Basic realm="whatsapp bot", charset="UTF-8"' if basic else 'Bearer realm="whatsapp bot"'
                )
                return response, status
            return view(*args, **kwargs)

        return wrapper

    return require_key


def _same_origin() -> bool:
    """True without an `Origin` header (curl, scripts, same-site navigations) or when it names this app.

    "This app" is the host (and port) the request was sent to: `Host`, or `X-Forwarded-Host` behind a
    proxy that sets it (Heroku's router keeps `Host` as the client sent it). The scheme is not compared:
    behind the router the bot sees http while the browser used https. A host without a port matches any
    port of that host name; an explicit port must match the origin's (or its scheme's default).
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    try:
        parts = urlsplit(origin.strip())
        origin_host = (parts.hostname or "").lower()
        origin_port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:  # a malformed port
        return False
    if not origin_host or parts.scheme.lower() not in ("http", "https"):
        return False  # "null" (a sandboxed frame, a file:// page) and anything stranger
    candidates = [request.headers.get("Host", "")]
    forwarded = request.headers.get("X-Forwarded-Host")
    if forwarded:
        candidates.append(forwarded.split(",")[0])
    for candidate in candidates:
        try:
            target = urlsplit("//" + candidate.strip())
            host, port = (target.hostname or "").lower(), target.port
        except ValueError:
            continue
        if host and host == origin_host and (port is None or port == origin_port):
            return True
    return False


def _has_key(api_key: str, *, basic: bool = False) -> bool:
    """Bearer or X-Api-Key (and HTTP Basic with the key as password when `basic`); constant-time."""
    offered = []
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        offered.append(value.strip())
    elif scheme.lower() == "basic" and basic:
        try:
            offered.append(base64.b64decode(value.strip(), validate=True).decode().partition(":")[2])
        except (ValueError, UnicodeDecodeError):
            pass
    if "X-Api-Key" in request.headers:
        offered.append(request.headers["X-Api-Key"].strip())
    expected = api_key.encode()
    return any(hmac.compare_digest(candidate.encode(), expected) for candidate in offered)


def _json_body(allowed: set[str], required: set[str]) -> dict:
    body = _parse_json()
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object (Content-Type: application/json)")
    unknown = set(body) - allowed
    if unknown:
        raise BadRequest(f"unknown fields: {_names(unknown)}; allowed: {', '.join(sorted(allowed))}")
    missing = required - set(body)
    if missing:
        raise BadRequest(f"missing fields: {', '.join(sorted(missing))}")
    return body


def _parse_json():
    """The request's JSON, or None when it is not JSON. 413 past MAX_UPLOAD_BYTES, chunked or not."""
    if not request.is_json:
        return None
    data = request.get_data(cache=True)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and limit is not None and len(data) >= limit:
        # A chunked body has no Content-Length to refuse up front: Werkzeug stops reading at the limit
        # and hands over the truncated part. One more read says whether the body went on.
        request.stream.read(1)  # raises RequestEntityTooLarge when it did
    try:
        return json.loads(data)
    except RecursionError:
        # Python's JSON parser recurses once per nesting level; [[[[...]]]] 100,000 deep is not a message.
        raise BadRequest("the JSON is nested too deeply") from None
    except ValueError:  # malformed JSON, or bytes that are no Unicode text
        return None


def _names(names: set) -> str:
    """Field names as the client sent them, each shortened: they are the client's text, not ours."""
    shown = [recipients.quoted(name, limit=40) for name in sorted(names)[:10]]
    return ", ".join(shown) + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def _store_error_code(exc: Exception) -> str:
    name = type(exc).__name__
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def _qr_html(connection: Connection) -> str:
    state = connection.state
    if state == WAITING_FOR_QR and connection.last_qr:
        body = (
            f"<div class='qr'>{qr_svg(connection.last_qr)}</div>"
            "<p>WhatsApp &gt; Settings &gt; Linked devices &gt; Link a device, then scan this code.</p>"
        )
    elif state == CONNECTED:
        body = "<p>Connected: this bot is paired. Nothing to scan.</p>"
    else:
        body = f"<p>No QR code right now (state: {html.escape(state)}). This page updates itself.</p>"
    # The page fetches itself every 3 s and swaps in what changed (a new QR code, "Connected"): no
    # reload, so no flicker while scanning, and the browser's cached login goes with a same-origin GET.
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'><title>WhatsApp QR</title>"
        "<style>body{font-family:sans-serif;text-align:center;margin:1em}.qr svg{width:320px;max-width:100%;"
        "height:auto;background:#fff}</style></head>"
        f"<body><h1>Link your WhatsApp</h1><main id='status'>{body}</main>"
        "<script>setInterval(async()=>{try{const r=await fetch(location.pathname,{cache:'no-store'});"
        "if(!r.ok)return;const next=new DOMParser().parseFromString(await r.text(),'text/html')"
        ".getElementById('status'),now=document.getElementById('status');"
        "if(next&&next.innerHTML!==now.innerHTML)now.innerHTML=next.innerHTML}catch(e){}},3000)</script>"
        "</body></html>"
    )
