"""What WhatsApp says about the connection itself (whatsmeow's connectionevents.go), and what the
connect loop does about it.

- Connected: logged in. whatsmeow reconnects by itself after Disconnected/keep-alive timeouts.
- LoggedOut: the device was removed (stream error 401 device_removed, or connect failure 401/403/406).
  whatsmeow already deleted the device from its store; we wipe the snapshot too and show a new QR.
- StreamReplaced: another client logged in with the same device — during a Heroku restart that is our
  own next dyno. Not a logout: back off for long and retry, never fight, never wipe.
- TemporaryBan: refused until `Expire` seconds from now; wait that long, keep the session.
- ClientOutdated: WhatsApp refuses this whatsmeow version; only upgrading neonize helps. Retry slowly.
- ConnectFailure (others): whatsmeow does not reconnect by itself; we retry with backoff.
The handlers only report and choose the loop's next step (`Next`); the session decides about saving.
"""

from __future__ import annotations

import logging
import time

import events
from clock import iso_from_epoch, iso_now
from whatsapp.outage import CONNECTION_LOST
from whatsapp.states import CLIENT_OUTDATED, CONNECTED, LOGGED_OUT, RECONNECTING, TEMPORARILY_BANNED, Next

log = logging.getLogger("whatsapp")

# After StreamReplaced the other instance owns the session (often our own next dyno); wait this long
# before trying again, so two instances never kick each other off in a loop.
STREAM_REPLACED_DELAY = 60.0
CLIENT_OUTDATED_DELAY = 3600.0


class ConnectionEvents:
    """Mixin of Connection (client.py): the connection-level event handlers."""

    HANDLERS = {
        "ConnectedEv": "_on_connected",
        "LoggedOutEv": "_on_logged_out",
        "StreamReplacedEv": "_on_stream_replaced",
        "TemporaryBanEv": "_on_temporary_ban",
        "ConnectFailureEv": "_on_connect_failure",
        "ClientOutdatedEv": "_on_client_outdated",
        "StreamErrorEv": "_on_stream_error",
        "DisconnectedEv": "_on_disconnected",
        "KeepAliveTimeoutEv": "_on_keepalive_timeout",
        "KeepAliveRestoredEv": "_on_keepalive_restored",
    }

    def _on_connected(self, client, ev) -> None:
        self._cancel_qr_timer()
        self._backoff.reset()
        self.connected_since = time.time()
        self.banned_until = None
        self.pair_code = None
        self._set_state(CONNECTED)
        self._link_up = True
        data = {"jid": self._own_jid(client)}
        self.connected_as = data["jid"]  # the status's counterpart (the session's deviceJid follows)
        outage = self._outage.end()  # the login ends the outage; a told one gets its length
        if outage is not None:
            data["outageSeconds"] = outage
        self._emit(events.CONNECTED, data)
        # The session decides (off this thread) whether this is a new pairing to save once.
        self.session.connected(lambda: self.state == CONNECTED and not self._stopping.is_set())

    def _on_logged_out(self, client, ev) -> None:
        reason = enum_name(ev, "Reason") or "logged out"
        self.last_error = f"logged out by WhatsApp ({reason})"
        self._restart(
            Next(reason=f"logged out by WhatsApp ({reason}, on_connect={ev.OnConnect})", wipe=True),
            first=self.session.wait_until_device_gone,
        )

    def _on_stream_replaced(self, client, ev) -> None:
        self.last_error = "stream replaced: another client is using this session"
        self._outage.begin(CONNECTION_LOST, "another client is using this session (stream replaced)")
        self._restart(
            Next(
                reason="stream replaced by another client with this session (during a restart: the new dyno)",
                delay=STREAM_REPLACED_DELAY,
            )
        )

    def _on_temporary_ban(self, client, ev) -> None:
        seconds = max(int(ev.Expire), 60)
        self.banned_until = time.time() + seconds
        until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.banned_until))
        code = enum_name(ev, "Code") or "unknown reason"
        self.last_error = f"temporarily banned ({code}) until {until}"
        self._link_up = False
        self._emit(events.TEMPORARILY_BANNED, {"code": code, "until": iso_from_epoch(self.banned_until),
                                               "seconds": seconds})
        log.error("WhatsApp temporarily banned this number (%s) until %s; waiting, the session is kept", code, until)
        self._restart(Next(reason=f"temporarily banned until {until}", delay=seconds, state=TEMPORARILY_BANNED))

    def _on_connect_failure(self, client, ev) -> None:
        reason = enum_name(ev, "Reason") or "unknown"
        self.last_error = f"connect failure: {reason} {ev.Message}".strip()
        if reason in ("LOGGED_OUT", "MAIN_DEVICE_GONE", "UNKNOWN_LOGOUT"):
            # whatsmeow sends LoggedOut for these itself; this covers a build that sends only this.
            self._restart(Next(reason=f"connect failure {reason}", wipe=True))
        else:
            self._restart(Next(reason=f"connect failure {reason}"))

    def _on_client_outdated(self, client, ev) -> None:
        self.last_error = "WhatsApp refuses this client version: upgrade neonize in requirements.txt"
        log.error("client outdated: WhatsApp refuses this whatsmeow version; upgrade neonize and redeploy")
        self._link_up = False
        self._emit(events.CLIENT_OUTDATED, {"message": self.last_error})
        self._restart(Next(reason="client outdated", delay=CLIENT_OUTDATED_DELAY, state=CLIENT_OUTDATED))

    def _on_stream_error(self, client, ev) -> None:
        log.warning("stream error %s from WhatsApp", ev.Code)

    def _on_disconnected(self, client, ev) -> None:
        if self.state == CONNECTED:
            self._set_state(RECONNECTING)
            self._outage.begin(CONNECTION_LOST, "disconnected; whatsmeow reconnects by itself")
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
        self._outage.begin(CONNECTION_LOST, self.last_error)
        log.warning("keep-alive failed %d times over %.0fs: dropping the connection and reconnecting",
                    ev.ErrorCount, silent_for)
        self._restart(Next(reason=f"keep-alive failed for {silent_for:.0f}s"))

    def _on_keepalive_restored(self, client, ev) -> None:
        log.info("keep-alive restored")

    def _went_down(self, reason: str, retry_in: float | None) -> None:
        """One `disconnected` event per lost connection, however many retries follow."""
        if not self._link_up:
            return
        self._link_up = False
        data = {"reason": reason, "retryInSeconds": None if retry_in is None else round(retry_in, 1)}
        self.last_disconnect = {**data, "at": iso_now()}
        self._emit(events.DISCONNECTED, data)


    # -- the device leaves -------------------------------------------------------------------------
    def _wipe(self, reason: str) -> None:
        self._set_state(LOGGED_OUT)
        self._link_up = False
        self._outage.pause()  # not an outage: a new scan is needed, and the event says so
        data = {"reason": reason, "message": "a new QR scan is needed"}
        self.connected_as = None
        self.last_logout = {**data, "at": iso_now()}
        self._emit(events.LOGGED_OUT, data)
        log.warning("device logged out (%s): wiping the session and showing a new QR code", reason)
        try:
            self.session.wipe(reason)
        except Exception as exc:
            self.last_error = f"wipe failed: {exc}"
            log.exception("wiping the session failed")

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
            self._restart(Next(reason="session cleared through the API", wipe=True))
        else:
            self._wipe("session cleared through the API")
            self._wakeup.set()  # skip any backoff wait: connect now, to show a QR
        return logged_out


def enum_name(ev, field: str) -> str | None:
    """The name of an enum field's value in a neonize event proto (None when it has none)."""
    try:
        value = getattr(ev, field)
        return ev.DESCRIPTOR.fields_by_name[field].enum_type.values_by_number[value].name
    except (AttributeError, KeyError):
        return None
