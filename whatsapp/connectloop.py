"""The connect loop (whatsmeow's client.go `Connect` and the reconnect policy around it): restore the
session, create the client, probe, `connect()`, and when that returns or raises take the step an event
handler chose (`Next`) or the next backoff delay — until the worker stops. Nothing that goes wrong in
here ends the loop while the bot is not stopping: it is logged, counted (`loopErrors`) and retried."""

from __future__ import annotations

import logging
import threading
from typing import Callable

from reachability import Unreachable
from whatsapp.outage import CONNECT_FAILED, CONNECTION_LOST, NO_ANSWER
from whatsapp.states import CLIENT_OUTDATED, CONNECTING, RECONNECTING, RESTORING, STOPPED, TEMPORARILY_BANNED, Next

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


class ConnectLoop:
    """Mixin of Connection (client.py): the loop its thread runs."""

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
        self.scan_connect = False  # set just before neonize's connect(), once the probe let it through
        self._set_state(CONNECTING)
        error = self._probe_error()
        if error is not None:
            # neonize would fail the same way, and keep a database handle: not called at all.
            self.unreachable += 1
            self.last_error = f"WhatsApp unreachable: {error}"
            self._outage.begin(NO_ANSWER, str(error))
            self.connected_since = None
            delay = self._backoff.next_delay()
            self._set_state(RECONNECTING)
            log.warning("WhatsApp unreachable (%s); retrying in %.1fs", error, delay)
            self._wakeup.wait(delay)
            self._wakeup.clear()
            return True
        self.connects += 1
        self.qr_index = 0
        # Asked here, not per attempt: on PostgreSQL it is a query, and an outage's refused attempts need none.
        self.scan_connect = not self.session.has_local_session()  # for stop(), see pair.py
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
            self._outage.begin(CONNECTION_LOST if self._link_up else CONNECT_FAILED, step.reason)
            self._went_down(step.reason, delay)
        elif step.state in (TEMPORARILY_BANNED, CLIENT_OUTDATED):
            self._outage.pause()  # WhatsApp answers, and says no: the event of its own tells it
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

