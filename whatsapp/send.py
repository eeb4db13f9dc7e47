"""What the API sends (whatsmeow's send.go and upload.go): each send takes the lock, checks that there
is a live connection, uploads media when it has any, sends, and reports the `sent` receipt."""

from __future__ import annotations

import mimetypes
import time

import events
import media
import messages
import neonize_lib
from clock import iso_from_epoch
from whatsapp.states import CONNECTED


class Sends:
    """Mixin of Connection (client.py)."""

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
        facts = media.image_facts(data)  # before the lock: Pillow's work needs no connection
        with self._lock:
            client = self._live_client(CONNECTED)
            upload = client.upload(data, neonize_lib.load().MediaType.MediaImage)
            message = messages.image(upload, mimetype, caption, facts)
            response = client.send_message(messages.to_jid(to), message)
        return self._sent(to, response, messages.without_media_keys(message))

    def send_voice_note(self, to: str, data: bytes, seconds: int) -> dict:
        """Upload an Ogg/Opus file and send it as a voice note (see messages.voice_note)."""
        with self._lock:
            client = self._live_client(CONNECTED)
            upload = client.upload(data, neonize_lib.load().MediaType.MediaAudio)
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
