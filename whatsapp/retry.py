"""Messages the bot could not decrypt (whatsmeow's retry.go and message.go `decryptMessages`), as
`undecryptable` events and a counter in the status: a lost message is never silent.

whatsmeow answers a message it cannot decrypt with a retry receipt (a fresh pre-key rides along only
from the second one: retry.go `sendRetryReceipt`), and the sender's client re-sends; the bot sees the
message when that works. It reports each failure as `UndecryptableMessage` (neonize's
`UndecryptableMessageEv`) once per failed attempt: a message that arrives after its retries still had
an `undecryptable` event before it. A sender whose client does not answer retry receipts never
re-sends: then this event is all the owner learns of the message.

whatsmeow could also ask the owner's own phone for the message (`Client.AutomaticMessageRerequestFromPhone`,
retry.go `delayedRequestMessageFromPhone`), but neonize 0.5.2 neither sets that field nor exposes a
way to (goneonize/main.go builds the client with `whatsmeow.NewClient` and sets only the proxy).
"""

from __future__ import annotations

import logging
import time

import events
import messages
from clock import iso_from_epoch
from recipients import jid_text
from textsafe import printable

log = logging.getLogger("whatsapp")

# neonize's UndecryptableMessage.DecryptFailModeT (whatsmeow events.DecryptFailMode: "" or "hide").
_FAIL_MODES = {1: "show", 2: "hide"}


class Retries:
    """Mixin of Connection (client.py)."""

    HANDLERS = {"UndecryptableMessageEv": "_on_undecryptable"}

    def _init_retries(self) -> None:
        self.undecryptable = 0
        self.last_undecryptable: str | None = None  # ISO time of the last one

    def _on_undecryptable(self, client, ev) -> None:
        self.undecryptable += 1
        self.last_undecryptable = iso_from_epoch(time.time())
        try:
            data = undecryptable_data(ev)
        except Exception:
            log.exception("could not read an undecryptable-message event")
            return
        log.warning("could not decrypt message %s from %s in %s (unavailable=%s, mode=%s): WhatsApp asks "
                    "the sender to send it again", printable(data["id"]), printable(data["from"]),
                    printable(data["chat"]), data["unavailable"], data["decryptFailMode"])
        self._emit(events.UNDECRYPTABLE, data)

    def _retry_status(self) -> dict:
        return {"undecryptable": self.undecryptable, "lastUndecryptable": self.last_undecryptable}


def undecryptable_data(ev) -> dict:
    info = ev.Info
    source = info.MessageSource
    # 1:1 messages come from the contact's LID; name the phone number when whatsmeow knows it.
    sender = source.SenderAlt if messages.is_lid(source.Sender) and source.SenderAlt.User else source.Sender
    stamp = int(info.Timestamp)
    stamp = stamp // 1000 if stamp > 10**11 else stamp  # neonize gives milliseconds for messages
    return {
        "id": info.ID,
        "from": jid_text(sender),
        "chat": jid_text(source.Chat),
        "isGroup": bool(source.IsGroup),
        "time": iso_from_epoch(stamp) if stamp > 0 else None,
        "unavailable": bool(ev.IsUnavailable),
        "decryptFailMode": _FAIL_MODES.get(int(ev.DecryptFailMode), "show"),
    }
