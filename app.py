"""The HTTP API: `create_app()` builds the bot and its thin JSON views; gunicorn loads `app`.

Creating the app starts nothing: the WhatsApp connection is started by gunicorn's `post_worker_init`
hook (see gunicorn.conf.py), in the one worker, after the port is bound. So `/api/health` answers
within Heroku's 60 s boot limit however long WhatsApp takes.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

import config as config_module
from logsetup import configure_logging
from whatsapp import Connection

log = logging.getLogger("app")


def error(status: int, code: str, message: str):
    """The one error shape of the API: {"error": code, "message": text}."""
    return jsonify(error=code, message=message), status


def create_app(cfg: config_module.Config | None = None, *, connection: Connection | None = None) -> Flask:
    cfg = cfg or config_module.load_config()
    configure_logging(cfg.log_level, cfg.secrets())
    log.info("starting: %s", cfg.features())

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_upload_bytes
    app.config["BOT_CONFIG"] = cfg
    connection = connection or Connection()
    app.extensions["whatsapp"] = connection

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        # 404, 405, 413 and friends: JSON like every other answer, never Werkzeug's HTML page.
        code = (exc.name or "error").lower().replace(" ", "_")
        return error(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception):
        log.exception("unhandled error in a request")
        return error(500, "internal_error", "the bot hit an unexpected error; see heroku logs")

    @app.get("/api/health")
    def health():
        # No store or WhatsApp call here: it must answer at once, also before the connection is up.
        return jsonify(ok=True, state=connection.status()["state"], timestamp=_now())

    return app


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _load_app() -> Flask:
    try:
        return create_app()
    except config_module.ConfigError as exc:
        # One clear line (gunicorn would otherwise print a traceback), then a non-zero exit.
        print(f"configuration error: {exc}", file=sys.stdout, flush=True)
        raise SystemExit(3) from None


app = _load_app()
