"""Receipts for the messages this account sent (whatsmeow's receipt.go), as `receipt` events."""

from __future__ import annotations

import time

import events
import messages
from clock import iso_from_epoch
from recipients import jid_text
from whatsapp.connectionevents import enum_name


class Receipts:
    """Mixin of Connection (client.py)."""

    HANDLERS = {"ReceiptEv": "_on_receipt"}

    def _on_receipt(self, client, ev) -> None:
        """Delivery and read receipts for messages this account sent (whatsmeow receipt.go: an empty
        type is "delivered", then "read" and "played"; the other types are about our own devices,
        retries and server errors, not about the recipient)."""
        kind = enum_name(ev, "Type")
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
