"""What the bot sends, as neonize's Message protos: text, replies that quote, images, voice notes,
locations. Pure builders: the connection (whatsapp/send.py) uploads media and sends what these return.
neonize's protos come from neonize_lib, the one module that imports neonize.
"""

from __future__ import annotations

import time

from neonize_lib import load as _neonize


def text(body: str):
    return _neonize().waE2E.Message(conversation=body)


def reply(to: str, body: str, reply_to: str, *, quoted=None, quoted_sender: str | None = None):
    """A text that quotes message `reply_to`. WhatsApp draws the quoted bubble from the ContextInfo's
    quotedMessage, which the bot has for the messages it received or sent lately (`quoted`). For an
    older id the reply names the id (stanzaId) and the chat partner as its author, without the
    content: the phone then shows the reply as plain text."""
    pb = _neonize().waE2E
    ContextInfo, ExtendedTextMessage, Message = pb.ContextInfo, pb.ExtendedTextMessage, pb.Message
    context = ContextInfo(stanzaID=reply_to, participant=bare_jid_text(to))
    if quoted is not None:
        context.participant = quoted_sender or context.participant
        context.quotedMessage.CopyFrom(quoted)
    return Message(extendedTextMessage=ExtendedTextMessage(text=body, contextInfo=context))


def image(upload, mimetype: str, caption: str | None, facts: dict):
    """An image already uploaded (whatsmeow encrypted it); `facts` from media.image_facts."""
    pb = _neonize().waE2E
    return pb.Message(imageMessage=pb.ImageMessage(
        URL=upload.url, directPath=upload.DirectPath, mediaKey=upload.MediaKey,
        fileEncSHA256=upload.FileEncSHA256, fileSHA256=upload.FileSHA256, fileLength=upload.FileLength,
        mimetype=mimetype, caption=caption or None, width=facts["width"], height=facts["height"],
        JPEGThumbnail=facts["thumbnail"] or None, mediaKeyTimestamp=int(time.time()),
    ))


def voice_note(upload, seconds: int):
    """An uploaded Ogg/Opus file as a voice note (ptt). Built here rather than with neonize's
    build_audio_message, which runs ffmpeg for the duration (media.py reads it from the file)."""
    import media

    pb = _neonize().waE2E
    return pb.Message(audioMessage=pb.AudioMessage(
        URL=upload.url, directPath=upload.DirectPath, mediaKey=upload.MediaKey,
        fileEncSHA256=upload.FileEncSHA256, fileSHA256=upload.FileSHA256, fileLength=upload.FileLength,
        mimetype=media.OGG_OPUS_MIME, seconds=seconds, PTT=True, mediaKeyTimestamp=int(time.time()),
    ))


def location(latitude: float, longitude: float, name: str | None = None, address: str | None = None):
    pb = _neonize().waE2E
    return pb.Message(locationMessage=pb.LocationMessage(
        degreesLatitude=latitude, degreesLongitude=longitude, name=name or None, address=address or None,
    ))


def without_media_keys(message):
    """What a later quote of this media message needs: its type and caption and thumbnail, not the key
    to the file."""
    quoted = type(message)()
    quoted.CopyFrom(message)
    for field in ("imageMessage", "audioMessage"):
        if quoted.HasField(field):
            part = getattr(quoted, field)
            for name in ("mediaKey", "URL", "directPath"):
                part.ClearField(name)
    return quoted


def to_jid(to: str):
    """A validated recipient (see recipients.py) as neonize's JID."""
    user, _, server = to.partition("@")
    return _neonize().build_jid(user, server or "s.whatsapp.net")


def is_lid(jid) -> bool:
    return getattr(jid, "Server", "") == "lid"


def bare_jid(jid) -> str | None:
    """user@server of a JID message, without the device part (what a quote's participant names)."""
    if not getattr(jid, "User", ""):
        return None
    return f"{jid.User}@{jid.Server}"


def bare_jid_text(to: str) -> str:
    user, _, server = to.partition("@")
    return f"{user.split(':')[0]}@{server or 's.whatsapp.net'}"
