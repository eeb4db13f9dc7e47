"""Chat actions (whatsmeow receipt.go, presence.go, send.go): read marks, typing and recording, reactions,
edits, deletes for everyone. Each goes to WhatsApp like a send: only while connected, counted by the
send pacer (`_sending_client`, send.py).

What whatsmeow sends for each: `MarkRead` a `<receipt type="read">` naming the first id and listing the
others (in a group with the `participant` who sent them); `SendChatPresence` a `<chatstate>`;
`SendPresence` the account's `<presence type="available">`; `BuildReaction`, `BuildEdit` and
`BuildRevoke` messages carrying the key of the message they are about (fromMe from the sender given),
sent with the `edit` attribute whatsmeow derives from them.
"""

from __future__ import annotations

import logging

import messages
import neonize_lib
from textsafe import printable
from whatsapp.refused import NotOwnMessage, SenderNeeded, calling

log = logging.getLogger("whatsapp")

# API state -> (whatsmeow ChatPresence, ChatPresenceMedia) as neonize's enums name them
CHAT_STATES = {
    "typing": ("CHAT_PRESENCE_COMPOSING", "CHAT_PRESENCE_MEDIA_TEXT"),
    "recording": ("CHAT_PRESENCE_COMPOSING", "CHAT_PRESENCE_MEDIA_AUDIO"),
    "paused": ("CHAT_PRESENCE_PAUSED", "CHAT_PRESENCE_MEDIA_TEXT"),
}


# `_author` for a message the bot sent itself: resolved to the live client's own JID under the lock (the
# session learns the device JID only a moment after a pairing, in a child process).
OWN = "me"


class ChatActions:
    """Mixin of Connection (client.py)."""

    def _init_chat(self) -> None:
        self._available_since: float | None = None  # connected_since of the connection that went online
        self._unavailable_said: float | None = None  # ... on which the log said it could not (said once)

    def mark_read(self, chat: str, ids: list[str], sender: str | None = None) -> dict:
        """Marks messages of a chat read. In a group the receipt names who sent them; the bot knows that
        for the messages it received since its start, else `sender` says it (one receipt per sender)."""
        by_sender: dict[str, list[str]] = {}
        for message_id in ids:
            by_sender.setdefault(self._author(chat, message_id, sender) or chat, []).append(message_id)
        lib = neonize_lib.load()
        with self._lock:
            client = self._sending_client("a read mark")
            for author, same in by_sender.items():
                calling(client.mark_read, *same, chat=messages.to_jid(chat), sender=self._jid(client, author),
                        receipt=lib.ReceiptType.READ)
        return {}

    def chat_presence(self, to: str, state: str) -> dict:
        """Typing or recording in a chat, or paused. WhatsApp shows a chat state from a contact who is
        online, so before its first one on a connection the bot marks itself available. whatsmeow sends
        that only once WhatsApp gave it the account's name (app-state sync after pairing; ErrNoPushName
        before): the chat state goes anyway, and the answer says whether the bot is available."""
        lib = neonize_lib.load()
        presence, media = CHAT_STATES[state]
        with self._lock:
            client = self._sending_client("a chat presence")
            available = self._go_available(client, lib)
            calling(client.send_chat_presence, messages.to_jid(to), lib.ChatPresence[presence],
                    lib.ChatPresenceMedia[media])
        return {"available": available}

    def _go_available(self, client, lib) -> bool:
        since = self.connected_since
        if since is not None and self._available_since == since:
            return True
        try:
            client.send_presence(lib.Presence.AVAILABLE)
        except Exception as exc:
            if self._unavailable_said != since:
                self._unavailable_said = since
                log.info("could not mark the bot online before its chat presence (%s); sending that anyway",
                         printable(str(exc)))
            return False
        self._available_since = since
        return True

    def react(self, chat: str, message_id: str, emoji: str, sender: str | None = None) -> dict:
        """An emoji on a message ("" removes the bot's reaction). The key says whose message it is: the
        bot's own, a sender it saw or was told, else (1:1) the chat partner."""
        author = self._author(chat, message_id, sender) or chat
        with self._lock:
            client = self._sending_client("a reaction")
            message = calling(client.build_reaction, messages.to_jid(chat), self._jid(client, author), message_id,
                              emoji)
            response = calling(client.send_message, messages.to_jid(chat), message)
        return {"id": response.ID, "timestamp": int(response.Timestamp)}

    def edit(self, chat: str, message_id: str, text: str) -> dict:
        """New text for a message the bot sent (neonize's build_edit: whatsmeow's BuildEdit, fromMe)."""
        self._own(message_id, "edit")
        new = messages.text(text)
        with self._lock:
            client = self._sending_client("an edit")
            response = calling(client.edit_message, messages.to_jid(chat), message_id, new)
        if message_id in self._recent:
            self._remember(message_id, None, new)  # a later reply quotes the new text
        return {"id": response.ID, "timestamp": int(response.Timestamp)}

    def delete_for_everyone(self, chat: str, message_id: str) -> dict:
        """Revokes a message the bot sent. neonize's build_revoke sets fromMe by comparing the sender
        with the account's own JID, so the sender given is that JID."""
        self._own(message_id, "delete")
        with self._lock:
            client = self._sending_client("a delete")
            response = calling(client.revoke_message, messages.to_jid(chat), client.get_me().JID, message_id)
            self._recent.pop(message_id, None)
        return {"id": response.ID, "timestamp": int(response.Timestamp)}

    def _author(self, chat: str, message_id: str, sender: str | None) -> str | None:
        """Who sent `message_id`: as given, else as the recent-message cache knows it (the bot's own JID
        for what it sent); unknown in a 1:1 chat is None (the chat partner), in a group an error."""
        if sender:
            return sender
        with self._lock:  # the message thread adds to the cache meanwhile
            known = self._recent.get(message_id)
        if known is not None:
            return known[0] or OWN
        if chat.endswith("@g.us"):
            raise SenderNeeded(f"message {message_id} of group {chat} is not one the bot received since its "
                               "start: say who sent it (\"sender\")")
        return None

    @staticmethod
    def _jid(client, author: str):
        return client.get_me().JID if author == OWN else messages.to_jid(author)

    def _own(self, message_id: str, what: str) -> None:
        with self._lock:
            known = self._recent.get(message_id)
        if known is not None and known[0] is not None:
            raise NotOwnMessage(f"message {message_id} came from {known[0]}: the bot can {what} only messages "
                                "it sent itself")
