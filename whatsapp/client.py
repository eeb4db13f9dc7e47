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
from pathlib import Path
from typing import Callable

import neonize_lib
from clock import iso_from_epoch
from config import KEEPALIVE_GIVE_UP, MEDIA_CACHE_ENTRIES, MEDIA_CACHE_SECONDS, SEND_RATE_LIMIT, UNREACHABLE_GRACE
from pacing import SendPacer
from recipients import jid_text
from whatsapp.backoff import Backoff
from whatsapp.connectloop import ConnectLoop
from whatsapp.call import Calls
from whatsapp.chat import ChatActions
from whatsapp.connectionevents import ConnectionEvents
from whatsapp.download import Downloads
from whatsapp.factory import default_client_factory
from whatsapp.group import Groups
from whatsapp.message import Messages
from whatsapp.outage import OutageWatch
from whatsapp.pair import Pairing
from whatsapp.receipt import Receipts
from whatsapp.retry import Retries
from whatsapp.send import Sends
from whatsapp.states import (
    CONNECTING,
    NOT_STARTED,
    STARTING,
    STOPPED,
    WAITING_FOR_QR,
    Next,
    NotConnected,
)
from whatsapp.user import Users

log = logging.getLogger("whatsapp")

# How long stop() waits for the connection thread while a QR code is shown (see stop()).
QR_STOP_WAIT = 0.5


class Connection(ConnectLoop, ConnectionEvents, Pairing, Messages, Receipts, Sends, Downloads, Calls, ChatActions, Users,
                 Groups, Retries):
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
        pacer: SendPacer | None = None,
        unreachable_grace: float = UNREACHABLE_GRACE,
        media_dir: Path | str = "session",
        media_cache_entries: int = MEDIA_CACHE_ENTRIES,
        media_cache_seconds: float = MEDIA_CACHE_SECONDS,
        reject_calls: bool = False,
        reject_calls_message: str | None = None,
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
        # WhatsApp out of reach past the grace: one `unreachable` event per outage (outage.py).
        self._outage = OutageWatch(unreachable_grace, self._emit)
        self.last_disconnect: dict | None = None  # the `disconnected` event's counterpart in the status
        self.last_logout: dict | None = None  # the `logged_out` event's
        self.connected_as: str | None = None  # the `connected` event's device (key holders only)
        # Set by gunicorn's post_worker_init: ends this worker gracefully so the master starts a new one.
        self.on_recycle: Callable[[], None] | None = None
        self._init_pairing(pair_phone)
        self._init_messages()
        self._init_chat()
        # Every send and chat action that writes to a chat is counted here (pacing.py, SEND_RATE_LIMIT).
        self.pacer = pacer or SendPacer(SEND_RATE_LIMIT)
        self._init_downloads(media_dir, media_cache_entries, media_cache_seconds)
        self._init_calls(reject_calls, reject_calls_message)
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
            # Not connected since the start is an outage too, until the first login or QR code.
            self._outage.begin()
            self._thread = threading.Thread(target=self._run, name="whatsapp-connection", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 8.0) -> None:
        """Disconnect and let the thread end; no save, no wipe (a SIGTERM is not a logout)."""
        # A QR code is shown, or about to be: this connect() started without a device (pair.py).
        waiting_for_scan = self.state == WAITING_FOR_QR or (self.state == CONNECTING and self.scan_connect)
        self._stopping.set()
        self._wakeup.set()
        self._outage.stop()  # a restart is no outage
        self._cancel_qr_timer()
        self.session.close()
        self._stop_client()
        thread = self._thread
        if thread and thread is not threading.current_thread():
            if waiting_for_scan:
                # While a QR code is shown, or before the first one came, neonize's connect() does not
                # return on Stop(): its Go side reads whatsmeow's QR channel until it closes
                # (goneonize/main.go), and an expected Disconnect() ends whatsmeow's QR emitter without
                # closing it (qrchan.go). Nothing is stored yet, so there is nothing to wait for: a
                # SIGTERM used to take 8 s more here.
                timeout = min(timeout, QR_STOP_WAIT)
            thread.join(timeout)
            if thread.is_alive() and not waiting_for_scan:
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
            # Each session event's counterpart: unreachable, disconnected, logged_out (the others:
            # state, connectedSince, bannedUntil, qr, and the session's lastSaveError).
            "unreachable": self._outage.status(),
            "lastDisconnect": self.last_disconnect,
            "lastLogout": self.last_logout,
            "connectedAs": self.connected_as,
            "qr": ({"index": self.qr_index, "expiresAt": iso_from_epoch(self.qr_expires_at)}
                   if self.state == WAITING_FOR_QR and self.last_qr is not None else None),
            "webhook": self._webhook.status() if self._webhook is not None else None,
            "pacing": self.pacer.status(),
        }
