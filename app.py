"""The HTTP API: `create_app()` builds the bot and its thin JSON views; gunicorn loads `app`.

Creating the app starts nothing: the WhatsApp connection is started by gunicorn's `post_worker_init`
hook (see gunicorn.conf.py), in the one worker, after the port is bound. So `/api/health` answers
within Heroku's 60 s boot limit however long WhatsApp takes.
"""

from __future__ import annotations

import base64
import hmac
import html
import logging
import sys
from datetime import datetime, timezone
from functools import wraps

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

import config as config_module
import recipients
import snapshot
import stores
import whatsapp
from logsetup import configure_logging
from qrterminal import qr_svg
from session_manager import SessionManager, build_manager
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
    manager: SessionManager | None = None,
    connection: Connection | None = None,
) -> Flask:
    cfg = cfg or config_module.load_config()
    configure_logging(cfg.log_level, cfg.secrets())
    log.info("starting: %s", cfg.features())

    if manager is None:
        manager = build_manager(cfg)
    if connection is None:
        webhook = None
        if cfg.webhook_url:
            from webhook import WebhookSender

            webhook = WebhookSender(cfg.webhook_url, cfg.webhook_secret)
            webhook.start()
        connection = Connection(
            manager,
            client_factory=load_client_factory(cfg.client_factory),
            webhook=webhook,
            pair_phone=cfg.pair_phone,
            max_connects=cfg.max_connects_per_worker
            or whatsapp.DEFAULT_MAX_CONNECTS["postgres" if cfg.session_store == "postgres" else "sqlite"],
            backoff=whatsapp.Backoff(first=cfg.reconnect_delay_min, cap=cfg.reconnect_delay_max),
            # Only in front of neonize itself: a test's scripted client has no WhatsApp to probe.
            probe=whatsapp.probe_whatsapp if cfg.reconnect_probe and not cfg.client_factory else None,
        )

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_upload_bytes
    app.config["BOT_CONFIG"] = cfg
    app.extensions["whatsapp"] = connection
    app.extensions["session_manager"] = manager
    _register_errors(app)
    _register_views(app, cfg, manager, connection)
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


def _register_views(app: Flask, cfg: config_module.Config, manager: SessionManager, connection: Connection):
    require_key = _key_checker(cfg.api_key)

    @app.get("/api/health")
    def health():
        # No store or WhatsApp call here: it must answer at once, also before the connection is up.
        return jsonify(ok=True, state=connection.state, timestamp=_now())

    @app.get("/api/session-status")
    def session_status():
        body = {**manager.status(), **connection.status(), "timestamp": _now()}
        body["storeKind"] = cfg.session_store
        if cfg.api_key and _has_key(cfg.api_key):
            body["deviceJid"] = manager.device_jid()
        return jsonify(body)

    @app.post("/api/save-session")
    @require_key
    def save_session():
        force = request.args.get("force", "").lower() in ("1", "true", "yes")
        try:
            result = manager.save(force=force, reason="API request" + (" (forced)" if force else ""))
        except snapshot.SnapshotTooLarge as exc:
            return error(413, "snapshot_too_large", str(exc))
        except snapshot.SnapshotError as exc:
            return error(409, "no_session", str(exc))
        except stores.StoreError as exc:
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
    @require_key
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
        unknown = set(request.form) - {"to", "caption", "filename"}
        if unknown or set(request.files) - {"file"}:
            raise BadRequest(f"unknown fields: {', '.join(sorted(unknown | (set(request.files) - {'file'})))}")
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


def _key_checker(api_key: str | None):
    """Decorator for protected views: 503 when no API_KEY is configured, 401 for a wrong or missing key."""

    def require_key(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            if not api_key:
                return error(
                    503, "api_key_not_set",
                    "set the API_KEY config var to use this endpoint (heroku config:set API_KEY=...)",
                )
            if not _has_key(api_key):
                response, status = error(
                    401, "unauthorized", "send the API key as 'Authorization: Bearer <API_KEY>' or 'X-Api-Key'"
                )
                # Lets a browser on /qr ask for the key (any user name, the key as password).
                response.headers["WWW-Authenticate"] = 'Basic realm="whatsapp bot", charset="UTF-8"'
                return response, status
            return view(*args, **kwargs)

        return wrapper

    return require_key


def _has_key(api_key: str) -> bool:
    """Bearer, X-Api-Key or HTTP Basic (key as password); constant-time comparisons."""
    offered = []
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        offered.append(value.strip())
    elif scheme.lower() == "basic":
        try:
            offered.append(base64.b64decode(value.strip(), validate=True).decode().partition(":")[2])
        except (ValueError, UnicodeDecodeError):
            pass
    if "X-Api-Key" in request.headers:
        offered.append(request.headers["X-Api-Key"].strip())
    expected = api_key.encode()
    return any(hmac.compare_digest(candidate.encode(), expected) for candidate in offered)


def _json_body(allowed: set[str], required: set[str]) -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object (Content-Type: application/json)")
    unknown = set(body) - allowed
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}")
    missing = required - set(body)
    if missing:
        raise BadRequest(f"missing fields: {', '.join(sorted(missing))}")
    return body


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
        body = f"<p>No QR code right now (state: {html.escape(state)}). This page refreshes itself.</p>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='refresh' content='5'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'><title>WhatsApp QR</title>"
        "<style>body{font-family:sans-serif;text-align:center;margin:2em}.qr svg{width:320px;height:320px;"
        "background:#fff}</style></head>"
        f"<body><h1>Link your WhatsApp</h1>{body}</body></html>"
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _load_app() -> Flask:
    try:
        return create_app()
    except config_module.ConfigError as exc:
        # One clear line (gunicorn would otherwise print a traceback); exit code 3 tells gunicorn's
        # master the worker cannot boot, so it stops instead of restarting it in a loop.
        print(f"configuration error: {exc}", file=sys.stdout, flush=True)
        raise SystemExit(3) from None


app = _load_app()
