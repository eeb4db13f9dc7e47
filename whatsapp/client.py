"""The one WhatsApp connection of this worker: a neonize client driven from a background thread.

neonize's `connect()` blocks for the whole life of the connection (it returns only after `stop()`),
and raises at once when WhatsApp cannot be reached. So one thread runs a loop: restore the session,
create the client, `connect()`, and when that returns or raises decide what comes next — retry with
backoff, wipe after a logout, wait out a ban — until the worker exits. Nothing that goes wrong inside
the loop ends it while the bot is not stopping: it is logged and the loop tries again after a backoff.

`Connection` is one object, as whatsmeow's Client is one type, with its methods split by concern over
the modules of this package the way whatsmeow splits its own (connectionevents.go, pair.go,
message.go, receipt.go, send.go): each concern is a mixin class declaring the neonize events it
handles (`HANDLERS`, event class name -> method name); this module holds the lifecycle, the loop, the
lock and the status. The connection reports (events, `session.connected`, `session.wipe`); the session
decides what to store.

Calling into neonize's Go side with no live client panics the whole process (it looks the client up
in a map and dereferences it), so sends, logout and pairing are allowed only in the states that have
one, under the lock that `stop()` also takes.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Callable

import neonize_lib
from clock import iso_from_epoch
from config import KEEPALIVE_GIVE_UP
from reachability import Unreachable
from recipients import jid_text
from whatsapp.backoff import Backoff
from whatsapp.connectionevents import ConnectionEvents
from whatsapp.factory import default_client_factory
from whatsapp.message import Messages
from whatsapp.pair import Pairing
from whatsapp.receipt import Receipts
from whatsapp.retry import Retries
from whatsapp.send import Sends
from whatsapp.states import (
    CONNECTING,
    NOT_STARTED,
    RECONNECTING,
    RESTORING,
    STARTING,
    STOPPED,
    WAITING_FOR_QR,
    Next,
    NotConnected,
)

log = logging.getLogger("whatsapp")

# neonize opens a new whatsmeow database container on every connect() and never closes the old one
# (goneonize/main.go: Neonize() calls getDB → sqlstore.New, and no exported function ever calls
# Container.Close; Stop() only disconnects the client and cancels its context). The container's
# database/sql pool keeps its connection-opener goroutine, so Go never collects it: one open SQLite
# file handle (~0.18 MB) or one PostgreSQL server connection per connect(). While WhatsApp is
# unreachable the probe below keeps failed attempts away from neonize altogether; the connects that
# still happen (sessions that end, QR rounds, handshakes that fail past the probe) are bounded by
# handing over to a fresh worker after this many (the session on disk or in the database stays).
DEFAULT_MAX_CONNECTS = {"postgres": 8, "sqlite": 500}


class Connection(ConnectionEvents, Pairing, Messages, Receipts, Retries, Sends):
    def __init__(
        self,
        session,
        *,
        client_factory: Callable[[str], object] = default_client_factory,
        webhook=None,
        pair_phone: str | None = None,
        backoff: Backoff | None = None,
        out=None,
        max_connects: int | None = None,
        probe: Callable[[], bool] | None = None,
        keepalive_give_up: float = KEEPALIVE_GIVE_UP,
    ) -> None:
        self.session = session  # session_manager.Session
        self._factory = client_factory
        self._webhook = webhook
        self._backoff = backoff or Backoff()
        self._out = out or sys.stdout
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = None
        self._in_connect = False
        self._next: Next | None = None
        self.state = NOT_STARTED
        self.last_error: str | None = None
        self._link_up = False  # a `connected` event went out and no `disconnected` since
        self.connected_since: float | None = None
        self.banned_until: float | None = None
        self.starts = 0
        self.connects = 0
        self.max_connects = max_connects
        # Called before each connect(): raises when WhatsApp cannot be reached (reachability.py).
        self._probe = probe
        self.connect_attempts = 0  # every attempt, probed away or handed to neonize
        self.keepalive_give_up = keepalive_give_up
        self.keepalive_reconnects = 0  # connections dropped because pings went unanswered
        self.unreachable = 0  # attempts the probe kept away from neonize
        self.loop_errors = 0  # unexpected errors the connect loop survived
        # Set by gunicorn's post_worker_init: ends this worker gracefully so the master starts a new one.
        self.on_recycle: Callable[[], None] | None = None
        self._init_pairing(pair_phone)
        self._init_messages()
        self._init_retries()

    # -- lifecycle (gunicorn hooks) -----------------------------------------------------------------
    def start(self) -> None:
        """From gunicorn's post_worker_init, in the worker's main thread, before it takes requests."""
        with self._lock:
            if self._thread is not None:
                return
            self.starts += 1
            self._set_state(STARTING)
            log.info("WhatsApp connection starting in worker pid %d", os.getpid())
            # neonize is imported here, once, before any request thread exists (see neonize_lib.py).
            # A failure is not fatal here: the loop tries again, with backoff, and reports it.
            try:
                neonize_lib.load()
            except Exception as exc:
                self.last_error = f"cannot load neonize: {exc}"
                log.exception("cannot load neonize; the connection will keep trying")
            self._thread = threading.Thread(target=self._run, name="whatsapp-connection", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 8.0) -> None:
        """Disconnect and let the thread end; no save, no wipe (a SIGTERM is not a logout)."""
        self._stopping.set()
        self._wakeup.set()
        self._cancel_qr_timer()
        self.session.close()
        self._stop_client()
        thread = self._thread
        if thread and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("connection thread still busy after %.0fs; exiting anyway", timeout)
        if self._webhook:
            self._webhook.stop()
        self._set_state(STOPPED)
        log.info("connection stopped")

    def running(self) -> bool:
        """False when the connection is stopped or its thread has ended (health says so)."""
        if self.state == NOT_STARTED:
            return True  # created, not started yet: gunicorn starts it before taking requests
        return self.state != STOPPED and self._thread is not None and self._thread.is_alive()

    # -- the loop ---------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._set_state(RESTORING)
            self.session.restore_on_boot()
        except Exception as exc:  # a broken store or snapshot must not kill the worker
            self.last_error = f"restore failed: {exc}"
            log.exception("restoring the session failed; continuing without it")
        while not self._stopping.is_set():
            try:
                if not self._attempt():
                    break
            except Exception as exc:
                # A bug or an unforeseen failure must not leave the worker without WhatsApp until the
                # next restart: say it, wait, try again.
                self.loop_errors += 1
                self.last_error = f"connection loop error: {exc}"
                delay = self._backoff.next_delay()
                self._set_state(RECONNECTING)
                log.exception("the connection loop failed; trying again in %.1fs", delay)
                self._wakeup.wait(delay)
                self._wakeup.clear()
        self._set_state(STOPPED)

    def _ensure_client(self) -> None:
        if self._client is not None:
            return
        try:
            client = self._factory(self.session.database())
            self._register_handlers(client)
        except Exception as exc:
            self.last_error = f"cannot create the WhatsApp client: {exc}"
            raise
        self._client = client

    def _attempt(self) -> bool:
        """One connect attempt and the wait after it; False when the loop must end."""
        if self.max_connects and self.connects >= self.max_connects and self.on_recycle:
            log.warning(
                "%d connects in this worker: handing over to a fresh worker (neonize keeps one database "
                "handle open per connect)", self.connects,
            )
            self.on_recycle()
            return False
        self._ensure_client()
        self.connect_attempts += 1
        self._next = None
        self._set_state(CONNECTING)
        error = self._probe_error()
        if error is not None:
            # neonize would fail the same way, and keep a database handle: not called at all.
            self.unreachable += 1
            self.last_error = f"WhatsApp unreachable: {error}"
            self.connected_since = None
            delay = self._backoff.next_delay()
            self._set_state(RECONNECTING)
            log.warning("WhatsApp unreachable (%s); retrying in %.1fs", error, delay)
            self._wakeup.wait(delay)
            self._wakeup.clear()
            return True
        self.connects += 1
        self.qr_index = 0
        log.info("connecting to WhatsApp")
        with self._lock:
            if self._stopping.is_set():
                return False
            self._in_connect = True
        try:
            self._client.connect()
        except Exception as exc:  # neonize raises NeonizeError at once when WhatsApp is unreachable
            error = exc
        finally:
            with self._lock:
                self._in_connect = False
            self._cancel_qr_timer()
        if self._stopping.is_set():
            return False
        step = self._next or Next(reason=f"connection failed: {error}" if error else "connection ended")
        if error is not None:
            self.last_error = str(error)
        self.connected_since = None
        if step.wipe:
            self._wipe(step.reason)
            self._backoff.reset()
            return True
        delay = self._backoff.next_delay() if step.delay is None else step.delay
        self._set_state(step.state)
        if step.state == RECONNECTING:
            self._went_down(step.reason, delay)
        log.warning("%s; retrying in %.1fs", step.reason, delay)
        self._wakeup.wait(delay)
        self._wakeup.clear()
        return True

    def _probe_error(self) -> Exception | None:
        if self._probe is None:
            return None
        try:
            self._probe()
        except Unreachable as exc:
            return exc
        except Exception:  # a bug in the probe must not keep the bot offline: let neonize try
            log.exception("the reachability probe failed; connecting anyway")
        return None

    def _restart(self, step: Next, *, first: Callable[[], object] | None = None) -> None:
        """Called from event handlers: end the current connect() so the loop takes `step`."""
        self._next = step

        def stop() -> None:
            try:
                if first is not None:
                    first()
            except Exception:
                log.exception("preparing the restart failed; restarting anyway")
            self._stop_client()

        # Not from this thread: it is neonize's event thread, and Stop() waits for that very thread.
        threading.Thread(target=stop, name="whatsapp-restart", daemon=True).start()

    def _stop_client(self, wait: float = 5.0) -> None:
        # The lock is held during sends; a send stuck on the network must not hold a SIGTERM past
        # Heroku's 30 s. After `wait` we go on without stopping neonize: the process is exiting, and
        # gunicorn's graceful timeout ends the worker if neonize's own thread still holds it.
        if not self._lock.acquire(timeout=wait):
            log.warning("a WhatsApp call is still running after %.0fs; not waiting for it", wait)
            return
        try:
            if self._client is not None and self._in_connect:
                self._client.stop()
        except Exception:
            log.exception("stopping the WhatsApp client failed")
        finally:
            self._lock.release()

    # -- events -----------------------------------------------------------------------------------
    def _register_handlers(self, client) -> None:
        """Each concern's HANDLERS (event class name -> method name), looked up in neonize's events."""
        neonize_events = neonize_lib.load().events
        client.qr(self._on_qr)
        # neonize keeps bound methods as weak references; `self` lives as long as the worker.
        for cls in type(self).__mro__:
            for event_name, method_name in vars(cls).get("HANDLERS", {}).items():
                client.event(getattr(neonize_events, event_name))(getattr(self, method_name))

    def _emit(self, event: str, data: dict) -> None:
        """Hand an event to the webhook queue: never blocks, never raises into neonize's thread."""
        if self._webhook is None:
            return
        try:
            self._webhook.emit(event, data)
        except Exception:
            log.exception("could not queue the %s event", event)

    def _own_jid(self, client) -> str | None:
        try:
            return jid_text(client.get_me().JID) or None
        except Exception:  # not every client offers it; the session knows the device too
            return self._paired_jid or self.session.device_jid()

    def _live_client(self, *states: str):
        if self._client is None or not self._in_connect or self.state not in states:
            raise NotConnected(f"WhatsApp is {self.state.replace('_', ' ')}, not {' or '.join(states)}")
        return self._client

    # -- status -----------------------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        if state != self.state:
            log.debug("state %s -> %s", self.state, state)
        self.state = state

    def status(self) -> dict:
        return {
            "state": self.state,
            "connectionRunning": self.running(),
            "lastError": self.last_error,
            "connectedSince": iso_from_epoch(self.connected_since),
            "bannedUntil": iso_from_epoch(self.banned_until),
            "qrAvailable": self.state == WAITING_FOR_QR and self.last_qr is not None,
            "connectAttempts": self.connect_attempts,
            "clientConnects": self.connects,
            "keepaliveReconnects": self.keepalive_reconnects,
            "loopErrors": self.loop_errors,
            **self._retry_status(),
            "webhook": self._webhook.status() if self._webhook is not None else None,
        }
