"""gunicorn settings for the bot, each with the reason it has that value.

Unlike Heroku's sample config this one neither preloads the app nor follows WEB_CONCURRENCY: the
process holds a WhatsApp connection, and there must be exactly one of it.
"""

import logging
import os
import signal
import sys
import time

import config as bot_config

# Validate the environment in the master, before any worker is forked: a bad variable then stops the
# start with one line naming it, instead of a worker boot loop with tracebacks. The local API key file
# is checked here too (config.with_local_api_key: a link or a file others may read stops the start);
# the worker then reuses the key this wrote.
try:
    _cfg = bot_config.with_local_api_key(bot_config.load_config())
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
# request_arrival.ArrivalWorker is gthread with one change: a request reaches a thread only once its
# headers are all there, within config.REQUEST_ARRIVAL_TIMEOUT (gunicorn 27 has no setting that bounds
# header reading: 16 clients sending a byte a second held every thread, and /api/health with them).
worker_class = "request_arrival.ArrivalWorker"
threads = bot_config.REQUEST_THREADS

# One request per connection: a kept-alive connection's next request would be read by a thread on a
# blocking socket again (gthread's keep-alive path), out of reach of the arrival deadline. A new TCP
# connection per call costs the router (or a script) next to nothing.
keepalive = 0

# No preload: neonize runs a Go runtime, and a Go runtime does not survive fork(). The app (and with it
# neonize) is imported in the worker only.
preload_app = False

# Heroku sends SIGTERM to every process of the dyno and SIGKILLs them 30 s later. The master gives the
# worker this long after its SIGTERM, then kills it: the worker's exit hook (worker_exit below) fits the
# connection's stop, the save at stop (stopsave.py: at most once a day) and the webhook
# queue's delivery into it, keeping EXIT_MARGIN for the rest of the
# way out; the master still has 5 s of Heroku's 30 to exit itself.
graceful_timeout = 25
#: Seconds of the grace kept for what follows the webhook drain: stdout bridge, interpreter exit.
EXIT_MARGIN = 2.0
#: The longest the WhatsApp connection may take to stop; the webhook queue delivers meanwhile.
CONNECTION_STOP = 8.0

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
    _note_sigterm(worker)
    connection.start()


def _grace(worker) -> float:
    # The value in effect: GUNICORN_CMD_ARGS or the command line may override this file's.
    return float(getattr(worker.cfg, "graceful_timeout", graceful_timeout))


def _note_sigterm(worker) -> None:
    """Remember when the SIGTERM came: the master kills the worker graceful_timeout later, whatever the
    worker still does (in-flight requests are waited for first, so worker_exit may start late)."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(sig, frame):
        if getattr(worker, "bot_deadline", None) is None:
            worker.bot_deadline = time.monotonic() + _grace(worker) - EXIT_MARGIN
        if callable(previous):
            previous(sig, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn set it: no interrupted system calls


def worker_exit(server, worker):
    """Worker, on its way out (SIGTERM included): stop the connection so the Go call returns, and deliver
    the webhook queue within what is left of the grace; what is still undelivered is logged as a count."""
    deadline = getattr(worker, "bot_deadline", None) or time.monotonic() + _grace(worker) - EXIT_MARGIN
    extensions = worker.wsgi.extensions if getattr(worker, "wsgi", None) is not None else {}
    connection = extensions.get("whatsapp")
    if connection is not None:
        # The queue keeps delivering while the connection stops (its own thread).
        connection.stop(timeout=max(0.0, min(CONNECTION_STOP, deadline - time.monotonic())))
        # The save at stop (stopsave.py) when the session asks for one; the queue still delivers meanwhile.
        connection.session.save_at_stop(deadline - time.monotonic() - 1.0,
                                        recycling=getattr(worker, "bot_recycling", False))
    hub = extensions.get("events")
    if hub is not None:
        try:
            hub.close(deadline)
        except Exception:
            _log.exception("could not finish the webhook queue")
    import stdout_bridge

    stdout_bridge.uninstall()  # drains what is left in the pipe, so the last lines are not lost
    _exit_now_if_neonize_holds_the_worker()


def _exit_now_if_neonize_holds_the_worker():
    """neonize runs its blocking Go call on a non-daemon thread, which Stop() cannot end while a QR code
    is shown (see whatsapp/client.py, stop()). Python's exit would wait for that thread until the master
    kills the worker after graceful_timeout: a SIGTERM during a scan took 10 s. By now the connection,
    the webhook queue and the log bridge are stopped and flushed, so nothing is lost by leaving at once."""
    import threading

    held = [t for t in threading.enumerate() if t.is_alive() and not t.daemon and t is not threading.current_thread()]
    if held:
        logging.getLogger("app").info("worker exits now: %s still running inside neonize",
                                      ", ".join(t.name for t in held))
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
