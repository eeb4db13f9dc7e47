"""The one WhatsApp connection of this worker: a neonize client driven from a background thread.

neonize's `connect()` blocks for the whole life of the connection (it returns only after `stop()`),
and raises at once when WhatsApp cannot be reached. So one thread runs a loop: restore the session,
`connect()`, and when that returns or raises decide what comes next — retry with backoff, wipe after
a logout, wait out a ban — until the worker exits.

What each whatsmeow event means (read from whatsmeow's connectionevents.go and neonize's main.go):
- Connected: logged in. whatsmeow reconnects by itself after Disconnected/keep-alive timeouts.
- LoggedOut: the device was removed (stream error 401 device_removed, or connect failure 401/403/406).
  whatsmeow already deleted the device from its store; we wipe the snapshot too and show a new QR.
- StreamReplaced: another client logged in with the same device — during a Heroku restart that is our
  own next dyno. Not a logout: back off for long and retry, never fight, never wipe.
- TemporaryBan: refused until `Expire` seconds from now; wait that long, keep the session.
- ClientOutdated: WhatsApp refuses this whatsmeow version; only upgrading neonize helps. Retry slowly.
- ConnectFailure (others): whatsmeow does not reconnect by itself; we retry with backoff.
Calling into neonize's Go side with no live client panics the whole process (it looks the client up
in a map and dereferences it), so sends, logout and pairing are allowed only in the states that have
one, under the lock that `stop()` also takes.
"""

from __future__ import annotations

import importlib
import logging
import mimetypes
import os
import random
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import events
import messages
from clock import iso_from_epoch
from config import KEEPALIVE_GIVE_UP
from qrterminal import qr_block
from reachability import Unreachable
from recipients import jid_text
from textsafe import printable

log = logging.getLogger("whatsapp")

# States the API reports.
STARTING = "starting"
RESTORING = "restoring"
CONNECTING = "connecting"
WAITING_FOR_QR = "waiting_for_qr"
CONNECTED = "connected"
RECONNECTING = "reconnecting"
LOGGED_OUT = "logged_out"
TEMPORARILY_BANNED = "temporarily_banned"
CLIENT_OUTDATED = "client_outdated"
STOPPED = "stopped"
NOT_STARTED = "not_started"

# whatsmeow shows a QR for 60 s, then five more for 20 s each, then gives up and disconnects. If no
# new code came for this long, the round is over: start another so the owner always has a fresh one.
QR_ROUND_TIMEOUT = 90.0
# How long each code of a round is valid (whatsmeow qrchan.go: the first code's timeout is 60 s, each
# later one's 20 s): the `expiresAt` of GET /api/qr and of the `qr` event.
QR_FIRST_CODE_SECONDS = 60
QR_NEXT_CODE_SECONDS = 20
# Recent messages (incoming and sent through the API) kept for `replyTo`: WhatsApp shows the quoted
# bubble from the quoted message's content, which the reply must carry.
RECENT_MESSAGES = 200
# After StreamReplaced the other instance owns the session (often our own next dyno); wait this long
# before trying again, so two instances never kick each other off in a loop.
STREAM_REPLACED_DELAY = 60.0
CLIENT_OUTDATED_DELAY = 3600.0
# neonize opens a new whatsmeow database container on every connect() and never closes the old one
# (goneonize/main.go: Neonize() calls getDB → sqlstore.New, and no exported function ever calls
# Container.Close; Stop() only disconnects the client and cancels its context). The container's
# database/sql pool keeps its connection-opener goroutine, so Go never collects it: one open SQLite
# file handle (~0.18 MB) or one PostgreSQL server connection per connect(). While WhatsApp is
# unreachable the probe below keeps failed attempts away from neonize altogether; the connects that
# still happen (sessions that end, QR rounds, handshakes that fail past the probe) are bounded by
# handing over to a fresh worker after this many (the session on disk or in the database stays).
DEFAULT_MAX_CONNECTS = {"postgres": 8, "sqlite": 500}


class NotConnected(RuntimeError):
    """The action needs a live WhatsApp connection and there is none right now."""


class Backoff:
    """Exponential backoff with full jitter, about 1 s doubling up to 60 s."""

    def __init__(self, first: float = 1.0, cap: float = 60.0, rng: random.Random | None = None):
        self.first, self.cap = first, cap
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        # The exponent stops growing long after the cap is reached: 2.0**1024 would overflow, and a
        # bot offline for a day at the cap fails well over 1,000 times.
        ceiling = min(self.cap, self.first * 2.0 ** min(self.failures, 64))
        self.failures += 1
        # Half fixed, half random: never 0 (no hammering), never in lockstep with another instance.
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0


@dataclass
class _Next:
    """What the run loop does once `connect()` has returned."""

    reason: str
    delay: float | None = None  # None: take the next backoff delay
    wipe: bool = False
    state: str = RECONNECTING


def default_client_factory(database: str):
    from neonize.client import NewClient

    _say_once_what_ffmpeg_affects()
    client = NewClient(database)
    # neonize prints each login status code as a bare number on stdout; a log line says what it is.
    client._NewClient__onLoginStatus = lambda uuid, status: log.debug("neonize login status %s", status)
    return client


def _say_once_what_ffmpeg_affects() -> None:
    """neonize warns on every connect of a new process that media "will fail" without ffmpeg, which
    reads as alarming for a bot that may never send any. Say once what it really affects."""
    import shutil

    from neonize.utils import ffmpeg

    if ffmpeg._ffmpeg_checked:
        return
    ffmpeg._ffmpeg_checked = True  # neonize's own check stays quiet from now on
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        log.info(
            "%s not installed: neonize's video, GIF and sticker messages need it (no endpoint of this bot "
            "sends them); text, documents, images, voice notes and locations work without it",
            " and ".join(missing),
        )


def load_client_factory(spec: str | None) -> Callable[[str], object]:
    """`module:callable` from WHATSAPP_CLIENT_FACTORY (a test seam), or neonize's NewClient."""
    if not spec:
        return default_client_factory
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr or "factory")


class Connection:
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
        self._pair_phone = pair_phone
        self._backoff = backoff or Backoff()
        self._out = out or sys.stdout
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = None
        self._in_connect = False
        self._next: _Next | None = None
        self._qr_timer: threading.Timer | None = None
        self.state = NOT_STARTED
        self.last_error: str | None = None
        self.last_qr: str | None = None
        self.qr_count = 0
        self.qr_index = 0  # codes shown in the current round (whatsmeow's QR channel)
        self.qr_expires_at: float | None = None
        self._link_up = False  # a `connected` event went out and no `disconnected` since
        self._paired_jid: str | None = None
        self._recent: OrderedDict[str, tuple[str | None, object]] = OrderedDict()  # id -> (sender, Message)
        self.connected_since: float | None = None
        self.banned_until: float | None = None
        self.pair_code: str | None = None
        self.starts = 0
        self.connects = 0
        self.max_connects = max_connects
        # Called before each connect(): raises when WhatsApp cannot be reached (reachability.py).
        self._probe = probe
        self.connect_attempts = 0  # every attempt, probed away or handed to neonize
        self.keepalive_give_up = keepalive_give_up
        self.keepalive_reconnects = 0  # connections dropped because pings went unanswered
        self.unreachable = 0  # attempts the probe kept away from neonize
        # Set by gunicorn's post_worker_init: ends this worker gracefully so the master starts a new one.
        self.on_recycle: Callable[[], None] | None = None

    # -- lifecycle (gunicorn hooks) -----------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self.starts += 1
            self._set_state(STARTING)
            log.info("WhatsApp connection starting in worker pid %d", os.getpid())
            self._thread = threading.Thread(target=self._run, name="whatsapp-connection", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 8.0) -> None:
        """Disconnect and let the thread end; no save, no wipe (a SIGTERM is not a logout)."""
        self._stopping.set()
        self._wakeup.set()
        if self._qr_timer:
            self._qr_timer.cancel()
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

    # -- the loop ---------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._set_state(RESTORING)
            self.session.restore_on_boot()
        except Exception as exc:  # a broken store or snapshot must not kill the worker
            self.last_error = f"restore failed: {exc}"
            log.exception("restoring the session failed; continuing without it")
        try:
            self._client = self._factory(self.session.database())
            self._register_handlers(self._client)
        except Exception as exc:
            self.last_error = f"cannot create the WhatsApp client: {exc}"
            log.exception("cannot create the WhatsApp client")
            self._set_state(STOPPED)
            return
        while not self._stopping.is_set():
            if self.max_connects and self.connects >= self.max_connects and self.on_recycle:
                log.warning(
                    "%d connects in this worker: handing over to a fresh worker (neonize keeps one database "
                    "handle open per connect)", self.connects,
                )
                self.on_recycle()
                break
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
                continue
            self.connects += 1
            self.qr_index = 0
            log.info("connecting to WhatsApp")
            with self._lock:
                if self._stopping.is_set():
                    break
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
                break
            step = self._next or _Next(reason=f"connection failed: {error}" if error else "connection ended")
            if error is not None:
                self.last_error = str(error)
            self.connected_since = None
            if step.wipe:
                self._wipe(step.reason)
                self._backoff.reset()
                continue
            delay = self._backoff.next_delay() if step.delay is None else step.delay
            self._set_state(step.state)
            if step.state == RECONNECTING:
                self._went_down(step.reason, delay)
            log.warning("%s; retrying in %.1fs", step.reason, delay)
            self._wakeup.wait(delay)
            self._wakeup.clear()
        self._set_state(STOPPED)

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

    def _restart(self, step: _Next, *, first: Callable[[], object] | None = None) -> None:
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

    def _wipe(self, reason: str) -> None:
        self._set_state(LOGGED_OUT)
        self._link_up = False
        self._emit(events.LOGGED_OUT, {"reason": reason, "message": "a new QR scan is needed"})
        log.warning("device logged out (%s): wiping the session and showing a new QR code", reason)
        try:
            self.session.wipe(reason)
        except Exception as exc:
            self.last_error = f"wipe failed: {exc}"
            log.exception("wiping the session failed")

    # -- events -----------------------------------------------------------------------------------
    def _register_handlers(self, client) -> None:
        from neonize.events import (
            ClientOutdatedEv,
            ConnectedEv,
            ConnectFailureEv,
            DisconnectedEv,
            KeepAliveRestoredEv,
            KeepAliveTimeoutEv,
            LoggedOutEv,
            MessageEv,
            PairStatusEv,
            ReceiptEv,
            StreamErrorEv,
            StreamReplacedEv,
            TemporaryBanEv,
        )

        client.qr(self._on_qr)
        # neonize keeps bound methods as weak references; `self` lives as long as the worker.
        handlers = {
            PairStatusEv: self._on_pair_status,
            ConnectedEv: self._on_connected,
            LoggedOutEv: self._on_logged_out,
            StreamReplacedEv: self._on_stream_replaced,
            TemporaryBanEv: self._on_temporary_ban,
            ConnectFailureEv: self._on_connect_failure,
            ClientOutdatedEv: self._on_client_outdated,
            StreamErrorEv: self._on_stream_error,
            DisconnectedEv: self._on_disconnected,
            KeepAliveTimeoutEv: self._on_keepalive_timeout,
            KeepAliveRestoredEv: self._on_keepalive_restored,
            MessageEv: self._on_message,
            ReceiptEv: self._on_receipt,
        }
        for event_type, handler in handlers.items():
            client.event(event_type)(handler)

    def _on_qr(self, client, data: bytes) -> None:
        text = data.decode() if isinstance(data, bytes) else str(data)
        self.last_qr = text
        self.qr_count += 1
        self.qr_index += 1
        seconds = QR_FIRST_CODE_SECONDS if self.qr_index == 1 else QR_NEXT_CODE_SECONDS
        self.qr_expires_at = time.time() + seconds
        self._set_state(WAITING_FOR_QR)
        self._emit(events.QR, {"code": text, "expiresAt": iso_from_epoch(self.qr_expires_at),
                               "index": self.qr_index})
        lines = qr_block(text)
        # One write per line, flushed: each is its own line in `heroku logs`.
        for line in lines:
            print(line, file=self._out, flush=True)
        log.info("QR code %d printed above; also at GET /qr", self.qr_count)
        self._arm_qr_timer()
        if self._pair_phone and self.qr_count == 1:
            threading.Thread(target=self._pair_from_env, name="pair-phone", daemon=True).start()

    def _pair_from_env(self) -> None:
        try:
            code = self.request_pair_code(self._pair_phone)
            log.info("pairing code for PAIR_PHONE: %s (WhatsApp > Linked devices > Link with phone number)", code)
        except Exception as exc:
            log.error("could not get a pairing code for PAIR_PHONE: %s", exc)

    def _arm_qr_timer(self) -> None:
        self._cancel_qr_timer()
        timer = threading.Timer(QR_ROUND_TIMEOUT, self._qr_round_over)
        timer.daemon = True
        self._qr_timer = timer
        timer.start()

    def _cancel_qr_timer(self) -> None:
        if self._qr_timer:
            self._qr_timer.cancel()

    def _qr_round_over(self) -> None:
        if self.state == WAITING_FOR_QR and not self._stopping.is_set():
            log.info("no QR code scanned in this round; starting a new one")
            self._restart(_Next(reason="QR codes expired", delay=0, state=CONNECTING))

    def _on_pair_status(self, client, ev) -> None:
        if ev.Status == 2:  # SUCCESS
            self._cancel_qr_timer()
            jid = printable(jid_text(ev.ID))
            log.info("paired as %s; WhatsApp will reconnect the new device", jid)
            self._set_state(CONNECTING)
            self._paired_jid = jid_text(ev.ID)
            self._emit(events.PAIRED, {"jid": self._paired_jid})
        else:
            self.last_error = f"pairing failed: {ev.Error}"
            log.error("pairing failed: %s", ev.Error)

    def _on_connected(self, client, ev) -> None:
        self._cancel_qr_timer()
        self._backoff.reset()
        self.connected_since = time.time()
        self.banned_until = None
        self.pair_code = None
        self._set_state(CONNECTED)
        self._link_up = True
        self._emit(events.CONNECTED, {"jid": self._own_jid(client)})
        # The session decides (off this thread) whether this is a new pairing to save once.
        self.session.connected(lambda: self.state == CONNECTED and not self._stopping.is_set())

    def _on_logged_out(self, client, ev) -> None:
        reason = _enum_name(ev, "Reason") or "logged out"
        self.last_error = f"logged out by WhatsApp ({reason})"
        self._restart(
            _Next(reason=f"logged out by WhatsApp ({reason}, on_connect={ev.OnConnect})", wipe=True),
            first=self.session.wait_until_device_gone,
        )

    def _on_stream_replaced(self, client, ev) -> None:
        self.last_error = "stream replaced: another client is using this session"
        self._restart(
            _Next(
                reason="stream replaced by another client with this session (during a restart: the new dyno)",
                delay=STREAM_REPLACED_DELAY,
            )
        )

    def _on_temporary_ban(self, client, ev) -> None:
        seconds = max(int(ev.Expire), 60)
        self.banned_until = time.time() + seconds
        until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.banned_until))
        code = _enum_name(ev, "Code") or "unknown reason"
        self.last_error = f"temporarily banned ({code}) until {until}"
        self._link_up = False
        self._emit(events.TEMPORARILY_BANNED, {"code": code, "until": iso_from_epoch(self.banned_until),
                                               "seconds": seconds})
        log.error("WhatsApp temporarily banned this number (%s) until %s; waiting, the session is kept", code, until)
        self._restart(_Next(reason=f"temporarily banned until {until}", delay=seconds, state=TEMPORARILY_BANNED))

    def _on_connect_failure(self, client, ev) -> None:
        reason = _enum_name(ev, "Reason") or "unknown"
        self.last_error = f"connect failure: {reason} {ev.Message}".strip()
        if reason in ("LOGGED_OUT", "MAIN_DEVICE_GONE", "UNKNOWN_LOGOUT"):
            # whatsmeow sends LoggedOut for these itself; this covers a build that sends only this.
            self._restart(_Next(reason=f"connect failure {reason}", wipe=True))
        else:
            self._restart(_Next(reason=f"connect failure {reason}"))

    def _on_client_outdated(self, client, ev) -> None:
        self.last_error = "WhatsApp refuses this client version: upgrade neonize in requirements.txt"
        log.error("client outdated: WhatsApp refuses this whatsmeow version; upgrade neonize and redeploy")
        self._link_up = False
        self._emit(events.CLIENT_OUTDATED, {"message": self.last_error})
        self._restart(_Next(reason="client outdated", delay=CLIENT_OUTDATED_DELAY, state=CLIENT_OUTDATED))

    def _on_stream_error(self, client, ev) -> None:
        log.warning("stream error %s from WhatsApp", ev.Code)

    def _on_disconnected(self, client, ev) -> None:
        if self.state == CONNECTED:
            self._set_state(RECONNECTING)
            self._went_down("connection lost; whatsmeow reconnects by itself", None)
        log.info("disconnected; whatsmeow reconnects by itself")

    def _on_keepalive_timeout(self, client, ev) -> None:
        # whatsmeow reports a failed ping and, with its defaults, waits 3 minutes before doing anything
        # (and only with its own auto-reconnect): meanwhile the bot looks "connected" on a dead socket.
        silent_for = time.time() - ev.LastSuccess if ev.LastSuccess > 0 else 0.0
        if silent_for <= self.keepalive_give_up or self.state != CONNECTED:
            log.warning("keep-alive timeout (%d errors, %.0fs since the last answer); whatsmeow keeps trying",
                        ev.ErrorCount, silent_for)
            return
        self.last_error = f"keep-alive failed for {silent_for:.0f}s: the connection was dead"
        self.keepalive_reconnects += 1
        self._set_state(RECONNECTING)
        log.warning("keep-alive failed %d times over %.0fs: dropping the connection and reconnecting",
                    ev.ErrorCount, silent_for)
        self._restart(_Next(reason=f"keep-alive failed for {silent_for:.0f}s"))

    def _on_keepalive_restored(self, client, ev) -> None:
        log.info("keep-alive restored")

    def _on_message(self, client, ev) -> None:
        try:
            source = ev.Info.MessageSource
            if not source.IsFromMe:
                sender = source.SenderAlt if messages.is_lid(source.Sender) and source.SenderAlt.User else source.Sender
                self._remember(ev.Info.ID, messages.bare_jid(sender), ev.Message)
        except Exception:
            log.exception("could not keep an incoming message for replies")
        if not self._webhook:
            return
        try:
            payload = events.message_payload(ev)
        except Exception:
            log.exception("could not read an incoming message")
            return
        if payload:
            self._webhook.enqueue(payload)

    def _on_receipt(self, client, ev) -> None:
        """Delivery and read receipts for messages this account sent (whatsmeow receipt.go: an empty
        type is "delivered", then "read" and "played"; the other types are about our own devices,
        retries and server errors, not about the recipient)."""
        kind = _enum_name(ev, "Type")
        status = {"DELIVERED": "delivered", "READ": "read", "PLAYED": "read"}.get(kind or "")
        if status is None or not self._webhook:
            return
        source = ev.MessageSource
        # 1:1 messages go to the contact's LID; name the phone number when whatsmeow knows it.
        chat = jid_text(source.SenderAlt) if messages.is_lid(source.Chat) and source.SenderAlt.User else jid_text(source.Chat)
        at = int(ev.Timestamp)
        at = at // 1000 if at > 10**11 else at  # neonize gives seconds for receipts, millis elsewhere
        for message_id in ev.MessageIDs:
            data = {"id": message_id, "status": status, "chat": chat, "at": iso_from_epoch(at or time.time())}
            if kind == "PLAYED":
                data["played"] = True
            self._emit(events.RECEIPT, data)

    # -- reporting -----------------------------------------------------------------------------------
    def _emit(self, event: str, data: dict) -> None:
        """Hand an event to the webhook queue: never blocks, never raises into neonize's thread."""
        if self._webhook is None:
            return
        try:
            self._webhook.emit(event, data)
        except Exception:
            log.exception("could not queue the %s event", event)

    def _went_down(self, reason: str, retry_in: float | None) -> None:
        """One `disconnected` event per lost connection, however many retries follow."""
        if not self._link_up:
            return
        self._link_up = False
        self._emit(events.DISCONNECTED, {"reason": reason,
                                         "retryInSeconds": None if retry_in is None else round(retry_in, 1)})

    def _own_jid(self, client) -> str | None:
        try:
            return jid_text(client.get_me().JID) or None
        except Exception:  # not every client offers it; the session knows the device too
            return self._paired_jid or self.session.device_jid()

    def _remember(self, message_id: str, sender: str | None, message) -> None:
        if not message_id:
            return
        with self._lock:
            self._recent[message_id] = (sender, message)
            self._recent.move_to_end(message_id)
            while len(self._recent) > RECENT_MESSAGES:
                self._recent.popitem(last=False)

    # -- actions for the API ------------------------------------------------------------------------
    def _live_client(self, *states: str):
        if self._client is None or not self._in_connect or self.state not in states:
            raise NotConnected(f"WhatsApp is {self.state.replace('_', ' ')}, not {' or '.join(states)}")
        return self._client

    def send_text(self, to: str, text: str, reply_to: str | None = None) -> dict:
        with self._lock:
            client = self._live_client(CONNECTED)
            if reply_to:
                message = self._reply(to, text, reply_to)
                response = client.send_message(messages.to_jid(to), message)
            else:
                response = client.send_message(messages.to_jid(to), text)
                message = messages.text(text)
        extra = {"replyTo": reply_to, "quoted": reply_to in self._recent} if reply_to else {}
        return self._sent(to, response, message, **extra)

    def _reply(self, to: str, text: str, reply_to: str):
        known = self._recent.get(reply_to)
        sender, quoted = known if known is not None else (None, None)
        if known is not None:
            sender = sender or self._own_bare_jid()
        return messages.reply(to, text, reply_to, quoted=quoted, quoted_sender=sender)

    def _own_bare_jid(self) -> str | None:
        jid = self.session.device_jid()
        if not jid:
            return None
        user, _, server = jid.partition("@")
        return f"{user.split(':')[0]}@{server}"

    def _sent(self, to: str, response, message, **extra) -> dict:
        """The answer of every send; the `sent` receipt event (WhatsApp's server acknowledged it)."""
        result = {"id": response.ID, "timestamp": int(response.Timestamp), **extra}
        if message is not None:
            self._remember(response.ID, None, message)
        self._emit(events.RECEIPT, {"id": response.ID, "status": "sent", "chat": messages.bare_jid_text(to),
                                    "at": iso_from_epoch(result["timestamp"] or time.time())})
        return result

    def send_document(self, to: str, data: bytes, filename: str, caption: str | None, mimetype: str | None) -> dict:
        mimetype = mimetype or mimetypes.guess_type(filename)[0] or "application/octet-stream"
        with self._lock:
            client = self._live_client(CONNECTED)
            response = client.send_document(
                messages.to_jid(to), data, caption=caption or None, filename=filename, mimetype=mimetype
            )
        return self._sent(to, response, None)

    def send_image(self, to: str, data: bytes, mimetype: str, caption: str | None) -> dict:
        """Upload (encrypted by whatsmeow) and send an image; `mimetype` as media.image_type found it."""
        import media
        from neonize.utils.enum import MediaType

        facts = media.image_facts(data)  # before the lock: Pillow's work needs no connection
        with self._lock:
            client = self._live_client(CONNECTED)
            upload = client.upload(data, MediaType.MediaImage)
            message = messages.image(upload, mimetype, caption, facts)
            response = client.send_message(messages.to_jid(to), message)
        return self._sent(to, response, messages.without_media_keys(message))

    def send_voice_note(self, to: str, data: bytes, seconds: int) -> dict:
        """Upload an Ogg/Opus file and send it as a voice note (see messages.voice_note)."""
        from neonize.utils.enum import MediaType

        with self._lock:
            client = self._live_client(CONNECTED)
            upload = client.upload(data, MediaType.MediaAudio)
            message = messages.voice_note(upload, seconds)
            response = client.send_message(messages.to_jid(to), message)
        return self._sent(to, response, messages.without_media_keys(message))

    def send_location(self, to: str, latitude: float, longitude: float, name: str | None = None,
                      address: str | None = None) -> dict:
        message = messages.location(latitude, longitude, name, address)
        with self._lock:
            client = self._live_client(CONNECTED)
            response = client.send_message(messages.to_jid(to), message)
        return self._sent(to, response, message)

    def request_pair_code(self, phone_digits: str) -> str:
        phone_digits = phone_digits.lstrip("+")
        with self._lock:
            client = self._live_client(WAITING_FOR_QR)
            code = client.PairPhone(phone_digits, True)
        self.pair_code = code
        return code

    def logout_and_wipe(self) -> bool:
        """For /api/clear-session: tell WhatsApp we leave (when connected), then wipe and show a QR."""
        logged_out = False
        with self._lock:
            if self._client is not None and self._in_connect and self.state == CONNECTED:
                try:
                    self._client.logout()
                    logged_out = True
                except Exception as exc:
                    log.warning("logout from WhatsApp failed (%s); wiping locally anyway", exc)
            running = self._in_connect
        if running:
            self._restart(_Next(reason="session cleared through the API", wipe=True))
        else:
            self._wipe("session cleared through the API")
            self._wakeup.set()  # skip any backoff wait: connect now, to show a QR
        return logged_out

    # -- status -----------------------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        if state != self.state:
            log.debug("state %s -> %s", self.state, state)
        self.state = state

    def status(self) -> dict:
        return {
            "state": self.state,
            "lastError": self.last_error,
            "connectedSince": iso_from_epoch(self.connected_since),
            "bannedUntil": iso_from_epoch(self.banned_until),
            "qrAvailable": self.state == WAITING_FOR_QR and self.last_qr is not None,
            "connectAttempts": self.connect_attempts,
            "clientConnects": self.connects,
            "keepaliveReconnects": self.keepalive_reconnects,
            "webhook": self._webhook.status() if self._webhook is not None else None,
        }

    def current_qr(self) -> dict | None:
        """The code to scan now, with when it expires; None when the bot is not waiting for a scan."""
        text, expires = self.last_qr, self.qr_expires_at
        if self.state != WAITING_FOR_QR or not text:
            return None
        return {"code": text, "expiresAt": iso_from_epoch(expires), "index": self.qr_index}


def _enum_name(ev, field: str) -> str | None:
    try:
        value = getattr(ev, field)
        return ev.DESCRIPTOR.fields_by_name[field].enum_type.values_by_number[value].name
    except (AttributeError, KeyError):
        return None
