"""The app factory: `create_app()` reads the configuration and builds the bot (its session, its one
WhatsApp connection, the API Blueprint of api.py); gunicorn calls it (Procfile).

Importing this module builds nothing: no configuration is read and no store is created until
`create_app()` runs.

Creating the app starts nothing: the WhatsApp connection is started by gunicorn's `post_worker_init`
hook (see gunicorn.conf.py), in the one worker, after the port is bound. So `/api/health` answers
within Heroku's 60 s boot limit however long WhatsApp takes.
"""

from __future__ import annotations

import logging

from flask import Flask

import config as config_module
import reachability
import whatsapp
from api import api, register_error_handlers
from logsetup import configure_logging
from pacing import SendPacer
from session_manager import Session, build_session
from whatsapp import Connection, load_client_factory

log = logging.getLogger("app")


def build_events(cfg: config_module.Config):
    """The events hub (events.Events); with WEBHOOK_URL its delivery queue is started: a table in the
    session's database when the session lives in PostgreSQL (outbox.py), else memory."""
    from events import Events

    if not cfg.webhook_url:
        return Events()
    from delivery import EventQueue

    store = None
    if cfg.session_store == "postgres":
        from outbox import PostgresOutbox
        from pgsession import neonize_database_url

        store = PostgresOutbox(neonize_database_url(cfg.database_url), spill_size=cfg.webhook_queue_size)
    queue = EventQueue(cfg.webhook_url, cfg.webhook_secret, store=store, queue_size=cfg.webhook_queue_size,
                       attempts=cfg.webhook_attempts, first_retry=cfg.webhook_retry_delay)
    queue.start()
    return Events(queue)


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
    hub = None
    if connection is None:
        hub = build_events(cfg)
        # A failed save or wipe reaches the owner as a `save_failed` event (queued, never blocking).
        session.notify = hub.emit
        connection = Connection(
            session,
            client_factory=load_client_factory(cfg.client_factory),
            webhook=hub,
            pair_phone=cfg.pair_phone,
            max_connects=cfg.max_connects_per_worker
            or whatsapp.DEFAULT_MAX_CONNECTS["postgres" if cfg.session_store == "postgres" else "sqlite"],
            backoff=whatsapp.Backoff(first=cfg.reconnect_delay_min, cap=cfg.reconnect_delay_max),
            # Only in front of neonize itself: a test's scripted client has no WhatsApp to probe.
            probe=reachability.probe_whatsapp if cfg.reconnect_probe and not cfg.client_factory else None,
            keepalive_give_up=cfg.keepalive_give_up,
            pacer=SendPacer(cfg.send_rate_limit),
            unreachable_grace=cfg.unreachable_grace,
            media_dir=cfg.session_dir,
            media_cache_entries=cfg.media_cache_entries,
            media_cache_seconds=cfg.media_cache_seconds,
            reject_calls=cfg.reject_calls,
            reject_calls_message=cfg.reject_calls_message,
        )

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_upload_bytes
    app.config["BOT_CONFIG"] = cfg
    app.extensions["whatsapp"] = connection
    app.extensions["session"] = session
    # The events the owner's page lists and the webhook queue the worker drains at exit (gunicorn.conf.py).
    app.extensions["events"] = hub if hub is not None else getattr(connection, "_webhook", None)
    app.register_blueprint(api)
    register_error_handlers(app)
    return app
