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

log = logging.getLogger("whatsapp")


class Call:
    def __init__(self, connection, *, reject: bool = False, reply: str | None = None) -> None:
        self.connection = connection
        self.reject = reject
        self.reply = reply if reject else None
        self.offers = 0
        self.rejected = 0

    def on_offer(self, client, ev) -> None:
        threading.Thread(target=self._handle, args=(client, ev), name="call-offer", daemon=True).start()

    def _handle(self, client, ev) -> None:
        try:
            data = events.call_data(ev)
        except Exception:
            log.exception("could not read a call offer")
            return
        self.offers += 1
        data.update(rejected=False, replied=False)
        caller = printable(data["from"], 80)
        if self.reject:
            try:
                # The JID exactly as the offer named the caller (neonize's reject_call asks for that).
                client.reject_call(ev.basicCallMeta.callCreator, ev.basicCallMeta.callID)
                data["rejected"] = True
                self.rejected += 1
            except Exception as exc:
                log.warning("could not decline the call from %s: %s", caller, printable(exc, 200))
        if data["rejected"] and self.reply:
            try:
                self.connection.send_text(data["from"], self.reply)
                data["replied"] = True
            except Exception as exc:
                log.warning("declined the call from %s but could not text them: %s", caller, printable(exc, 200))
        log.info("call %s from %s: %s%s", printable(data["id"], 64), caller,
                 "declined" if data["rejected"] else "left ringing (REJECT_CALLS is off)",
                 ", caller texted" if data["replied"] else "")
        self.connection._emit(events.CALL, data)
