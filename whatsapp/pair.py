"""Pairing a new device: the QR codes whatsmeow hands out (qrchan.go), the phone-number pairing code
(pair-code.go), and what the phone's scan reports (pair.go)."""

from __future__ import annotations

import logging
import threading
import time

import events
from clock import iso_from_epoch
from qrterminal import qr_block
from recipients import jid_text
from textsafe import printable
from whatsapp.states import CONNECTING, WAITING_FOR_QR, Next

log = logging.getLogger("whatsapp")

# whatsmeow shows a QR for 60 s, then five more for 20 s each, then gives up and disconnects. If no
# new code came for this long, the round is over: start another so the owner always has a fresh one.
QR_ROUND_TIMEOUT = 90.0
# How long each code of a round is valid (whatsmeow qrchan.go: the first code's timeout is 60 s, each
# later one's 20 s): the `expiresAt` of GET /api/qr and of the `qr` event.
QR_FIRST_CODE_SECONDS = 60
QR_NEXT_CODE_SECONDS = 20


class Pairing:
    """Mixin of Connection (client.py). Owns `last_qr`, `qr_count`, `qr_index`, `qr_expires_at`,
    `pair_code`, `_paired_jid`, `scan_connect` and the QR round timer."""

    HANDLERS = {"PairStatusEv": "_on_pair_status"}

    def _init_pairing(self, pair_phone: str | None) -> None:
        self._pair_phone = pair_phone
        self._qr_timer: threading.Timer | None = None
        self.last_qr: str | None = None
        self.qr_count = 0
        self.qr_index = 0  # codes shown in the current round (whatsmeow's QR channel)
        self.qr_expires_at: float | None = None
        self.pair_code: str | None = None
        self._paired_jid: str | None = None
        # This connect() started without a logged-in device, and no pairing succeeded in it yet: neonize
        # reads whatsmeow's QR channel in it (goneonize's Connect), so Stop() cannot end it (client.py).
        self.scan_connect = False

    def _on_qr(self, client, data: bytes) -> None:
        text = data.decode() if isinstance(data, bytes) else str(data)
        self.last_qr = text
        self.qr_count += 1
        self.qr_index += 1
        seconds = QR_FIRST_CODE_SECONDS if self.qr_index == 1 else QR_NEXT_CODE_SECONDS
        self.qr_expires_at = time.time() + seconds
        self._outage.pause()  # WhatsApp answers: a scan is awaited, no outage
        # The state comes first: whoever sees the code in the logs finds the state saying so, and
        # GET /api/qr has the code (last_qr) as soon as the state does.
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
            self._restart(Next(reason="QR codes expired", delay=0, state=CONNECTING))

    def _on_pair_status(self, client, ev) -> None:
        if ev.Status == 2:  # SUCCESS
            self._cancel_qr_timer()
            jid = printable(jid_text(ev.ID))
            log.info("paired as %s; WhatsApp will reconnect the new device", jid)
            self.scan_connect = False  # the device is stored now: what follows is a login's connect()
            self._set_state(CONNECTING)
            self._paired_jid = jid_text(ev.ID)
            self._emit(events.PAIRED, {"jid": self._paired_jid})
        else:
            self.last_error = f"pairing failed: {ev.Error}"
            log.error("pairing failed: %s", ev.Error)

    def request_pair_code(self, phone_digits: str) -> str:
        phone_digits = phone_digits.lstrip("+")
        with self._lock:
            client = self._live_client(WAITING_FOR_QR)
            code = client.PairPhone(phone_digits, True)
        self.pair_code = code
        return code

    def current_qr(self) -> dict | None:
        """The code to scan now, with when it expires; None when the bot is not waiting for a scan."""
        text, expires = self.last_qr, self.qr_expires_at
        if self.state != WAITING_FOR_QR or not text:
            return None
        return {"code": text, "expiresAt": iso_from_epoch(expires), "index": self.qr_index}
