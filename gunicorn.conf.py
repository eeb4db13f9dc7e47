"""gunicorn settings for the bot, each with the reason it has that value.

Unlike Heroku's sample config this one neither preloads the app nor follows WEB_CONCURRENCY: the
process holds a WhatsApp connection, and there must be exactly one of it.
"""

import logging
import os
import sys

import config as bot_config

# Validate the environment in the master, before any worker is forked: a bad variable then stops the
# start with one line naming it, instead of a worker boot loop with tracebacks.
try:
    _cfg = bot_config.load_config()
except bot_config.ConfigError as _exc:
    print(f"configuration error: {_exc}", flush=True)
    sys.exit(1)

# Heroku routes requests to $PORT and requires it bound within 60 s of start; 8000 on a laptop.
bind = f"0.0.0.0:{_cfg.port}"

# Exactly one worker, whatever WEB_CONCURRENCY says. The Python buildpack sets WEB_CONCURRENCY to 2 or
# more, and gunicorn's default would follow it: two workers would be two WhatsApp connections on one
# device, replacing each other's stream forever. The hooks below also undo a -w/GUNICORN_CMD_ARGS/TTIN.
workers = 1

# Threads, so the API answers while the connection thread blocks inside neonize. gthread keeps the
# heartbeat in the worker's main thread, so a blocked WhatsApp call cannot make the master kill it.
# Requests waiting for a running save hold a thread each; config.SAVE_WAITERS caps them below this.
worker_class = "gthread"
threads = bot_config.REQUEST_THREADS

# No preload: neonize runs a Go runtime, and a Go runtime does not survive fork(). The app (and with it
# neonize) is imported in the worker only.
preload_app = False

# Heroku sends SIGTERM and SIGKILLs 30 s later. The worker disconnects from WhatsApp (at most
# STOP_DISCONNECT seconds) and may then save the live session once (stopsave.py: at most once a day);
# all of it ends before graceful_timeout, which stays 2 s inside Heroku's window.
graceful_timeout = 28
STOP_DISCONNECT = 8.0

# Heartbeat timeout for the worker (the master restarts a worker silent this long).
timeout = 30

# Access log to stdout, so each request is one line in `heroku logs` (errors go to stderr, which
# Heroku collects too).
accesslog = "-"
errorlog = "-"

# No runtime control socket: it would let anyone on the dyno change the worker count, and two bots on one
# machine (tests, a laptop) would fight over its default path in $HOME.
control_socket_disable = True

# Heroku's router already forwards the real client address; trust its X-Forwarded-* headers.
forwarded_allow_ips = "*"

_log = logging.getLogger("gunicorn.error")


def _pin_one_worker(server, asked) -> None:
    if asked != 1:
        _log.warning(
            "asked for %s workers (WEB_CONCURRENCY / -w / GUNICORN_CMD_ARGS / TTIN); running exactly 1: "
            "a second worker would open a second WhatsApp connection that kicks the first one off",
            asked,
        )
    server.num_workers = 1
    server.cfg.set("workers", 1)


def on_starting(server):
    """Master, before forking: enforce one worker even when the command line asked for more."""
    web_concurrency = os.environ.get("WEB_CONCURRENCY")
    if web_concurrency and web_concurrency.strip() != "1":
        _log.warning("WEB_CONCURRENCY=%s is ignored: this bot runs one worker", web_concurrency.strip())
    _pin_one_worker(server, server.cfg.workers)


def nworkers_changed(server, new_value, old_value):
    """A TTIN signal (or anything else) raised the worker count: put it back to one."""
    if new_value != 1:
        _pin_one_worker(server, new_value)


def post_fork(server, worker):
    """Worker, right after fork and before the app is loaded: route the lines neonize's Go side prints
    to stdout through the logger (stdout_bridge.py), before anything holds on to sys.stdout."""
    import stdout_bridge

    stdout_bridge.install()


def post_worker_init(worker):
    """Worker, app loaded, port already bound by the master: start the WhatsApp connection."""
    from logsetup import secret_filter

    # Mask secrets in gunicorn's own handlers too (its error log prints request errors).
    for name in ("gunicorn.error", "gunicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(secret_filter)
    connection = worker.wsgi.extensions["whatsapp"]

    def recycle():
        # Ends this worker's loop as a graceful exit would; the master then starts a fresh worker.
        worker.bot_recycling = True  # not a dyno stop: no save at stop
        worker.alive = False

    connection.on_recycle = recycle
    connection.start()


def worker_exit(server, worker):
    """Worker, on its way out (SIGTERM included): stop the connection so the Go call returns, then the
    save at stop when the session asks for one."""
    import time

    started = time.monotonic()
    connection = getattr(worker, "wsgi", None) and worker.wsgi.extensions.get("whatsapp")
    if connection is not None:
        connection.stop(timeout=STOP_DISCONNECT)
        left = graceful_timeout - 4 - (time.monotonic() - started)  # the master counts from SIGTERM
        connection.session.save_at_stop(left, recycling=getattr(worker, "bot_recycling", False))
    import stdout_bridge

    stdout_bridge.uninstall()  # drains what is left in the pipe, so the last lines are not lost
