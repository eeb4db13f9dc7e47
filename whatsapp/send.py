"""What the API sends (whatsmeow's send.go and upload.go): each send takes the lock, checks that there
is a live connection, counts itself against the send rate limit (pacing.py; the text a declined call
gets counts too), uploads media when it has any, sends, and reports the `sent` receipt. What WhatsApp
refuses (a group the number is not in, a failed upload) is WhatsAppRefused with whatsmeow's words (502),
not a 500. `to` is a number's or a group's JID: whatsmeow sends to a group with its sender key (send.go
`sendGroup`)."""

from __future__ import annotations

import mimetypes
import time

import events
import media
import messages
import neonize_lib
from clock import iso_from_epoch
from whatsapp.refused import calling
from whatsapp.states import CONNECTED


class Sends:
    """Mixin of Connection (client.py)."""

    def send_text(self, to: str, text: str, reply_to: str | None = None) -> dict:
        with self._lock:
            client = self._sending_client("a text")
            if reply_to:
                message = self._reply(to, text, reply_to)
                response = calling(client.send_message, messages.to_jid(to), message)
            else:
                response = calling(client.send_message, messages.to_jid(to), text)
                message = messages.text(text)
        extra = {"replyTo": reply_to, "quoted": reply_to in self._recent} if reply_to else {}
        return self._sent(to, response, message, **extra)

    def _sending_client(self, what: str):
        """The live client for a send or chat action that writes to a chat, once the send rate limit
        lets it through (pacing.TooFast otherwise). Called under the lock, after the connection check,
        so a request refused for another reason uses up nothing."""
        client = self._live_client(CONNECTED)
        self.pacer.take(what)
        return client

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
            client = self._sending_client("a document")
            response = calling(client.send_document, messages.to_jid(to), data, caption=caption or None,
                               filename=filename, mimetype=mimetype)
        return self._sent(to, response, None)

    def send_image(self, to: str, data: bytes, mimetype: str, caption: str | None) -> dict:
        """Upload (encrypted by whatsmeow) and send an image; `mimetype` as media.image_type found it."""
        facts = media.image_facts(data)  # before the lock: Pillow's work needs no connection
        with self._lock:
            client = self._sending_client("an image")
            upload = calling(client.upload, data, neonize_lib.load().MediaType.MediaImage)
            message = messages.image(upload, mimetype, caption, facts)
            response = calling(client.send_message, messages.to_jid(to), message)
        return self._sent(to, response, messages.without_media_keys(message))

    def send_voice_note(self, to: str, data: bytes, seconds: int) -> dict:
        """Upload an Ogg/Opus file and send it as a voice note (see messages.voice_note)."""
        with self._lock:
            client = self._sending_client("a voice note")
            upload = calling(client.upload, data, neonize_lib.load().MediaType.MediaAudio)
            message = messages.voice_note(upload, seconds)
            response = calling(client.send_message, messages.to_jid(to), message)
        return self._sent(to, response, messages.without_media_keys(message))

    def send_location(self, to: str, latitude: float, longitude: float, name: str | None = None,
                      address: str | None = None) -> dict:
        message = messages.location(latitude, longitude, name, address)
        with self._lock:
            client = self._sending_client("a location")
            response = calling(client.send_message, messages.to_jid(to), message)
        return self._sent(to, response, message)
