"""Incoming messages (whatsmeow's message.go): forwarded to the webhook as the event each is (a
`message`, or a `reaction`, `edit` or `delete` of a peer's, events.incoming_event), kept for a while so
a reply can quote them, and a file's keys handed to the download concern (download.py)."""

from __future__ import annotations

import logging
from collections import OrderedDict

import events
import messages

log = logging.getLogger("whatsapp")

# Recent messages (incoming and sent through the API) kept for `replyTo`: WhatsApp shows the quoted
# bubble from the quoted message's content, which the reply must carry.
RECENT_MESSAGES = 200


class Messages:
    """Mixin of Connection (client.py). Owns `_recent`: message id -> (sender, Message)."""

    HANDLERS = {"MessageEv": "_on_message"}

    def _init_messages(self) -> None:
        self._recent: OrderedDict[str, tuple[str | None, object]] = OrderedDict()

    def _on_message(self, client, ev) -> None:
        try:
            source = ev.Info.MessageSource
            if not source.IsFromMe:
                sender = source.SenderAlt if messages.is_lid(source.Sender) and source.SenderAlt.User else source.Sender
                self._remember(ev.Info.ID, messages.bare_jid(sender), ev.Message)
                self._remember_media(ev.Info.ID, ev.Message)
        except Exception:
            log.exception("could not keep an incoming message (for quotes and its file)")
        if not self._webhook:
            return
        try:
            found = events.incoming_event(ev)
        except Exception:
            log.exception("could not read an incoming message")
            return
        if found is None:
            return
        self._webhook.enqueue(events.payload(*found))

    def _remember(self, message_id: str, sender: str | None, message) -> None:
        if not message_id:
            return
        with self._lock:
            self._recent[message_id] = (sender, message)
            self._recent.move_to_end(message_id)
            while len(self._recent) > RECENT_MESSAGES:
                self._recent.popitem(last=False)
