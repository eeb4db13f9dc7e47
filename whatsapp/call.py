"""Calls offered to the number (whatsmeow call.go `handleCallEvent` → neonize's CallOfferEv): a `call`
event for the owner, and with REJECT_CALLS=1 the call declined at once through neonize's
`reject_call` (whatsmeow `RejectCall`: `<call><reject call-id call-creator count="0"/></call>`, on the
connection that got the offer), then REJECT_CALLS_MESSAGE texted to the caller when set.

A bot cannot take a call, and a call left ringing looks to the customer as if nobody is there; a
front desk declines it and says where to write instead. The work runs on a thread of its own: the
reject and the reply wait for WhatsApp's answer, and neonize's event thread must not wait (whatsmeow
would stop handling everything else meanwhile).
"""

from __future__ import annotations

import logging
import threading

import events
from textsafe import printable
from whatsapp.states import CONNECTED

log = logging.getLogger("whatsapp")


class Calls:
    """Mixin of Connection (client.py)."""

    HANDLERS = {"CallOfferEv": "_on_call_offer"}

    def _init_calls(self, reject: bool = False, reply: str | None = None) -> None:
        self._reject_calls = reject
        self._reject_calls_reply = reply if reject else None

    def _on_call_offer(self, client, ev) -> None:
        threading.Thread(target=self._handle_call_offer, args=(ev,), name="call-offer", daemon=True).start()

    def _handle_call_offer(self, ev) -> None:
        try:
            data = events.call_data(ev)
        except Exception:
            log.exception("could not read a call offer")
            return
        data.update(rejected=False, replied=False)
        caller = printable(data["from"], 80)
        if self._reject_calls:
            try:
                # Under the lock, on the live client only: a call into neonize's Go side after stop()
                # freed the client would take the whole process down (client.py).
                with self._lock:
                    live = self._live_client(CONNECTED)
                    # The JID exactly as the offer named the caller (neonize's reject_call asks for that).
                    live.reject_call(ev.basicCallMeta.callCreator, ev.basicCallMeta.callID)
                data["rejected"] = True
            except Exception as exc:
                log.warning("could not decline the call from %s: %s", caller, printable(exc, 200))
        if data["rejected"] and self._reject_calls_reply:
            try:
                self.send_text(data["from"], self._reject_calls_reply)
                data["replied"] = True
            except Exception as exc:
                log.warning("declined the call from %s but could not text them: %s", caller, printable(exc, 200))
        log.info("call %s from %s: %s%s", printable(data["id"], 64), caller,
                 "declined" if data["rejected"] else "left ringing (REJECT_CALLS is off)",
                 ", caller texted" if data["replied"] else "")
        self._emit(events.CALL, data)
