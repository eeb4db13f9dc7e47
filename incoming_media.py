"""What a customer's media message is: its description for the `message` event, and what fetching
the file later needs (`MediaRef`, kept by media_cache.py). Pure functions over neonize's waE2E.Message;
nothing here talks to WhatsApp.

The fields are whatsmeow's DownloadableMessage parts (download.go): imageMessage, videoMessage,
audioMessage (a voice note when PTT is set), documentMessage, stickerMessage. Each names its
encryption key, the SHA-256 of the encrypted and of the plain file, its length and where it is
(`url`, and `directPath` on a media host). The HKDF info string per part is download.go's
classToMediaType (a sticker is keyed like an image); the mms-type in a direct-path URL is
mediaTypeToMMSType.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# message field -> (HKDF info, mms-type)
PARTS = {
    "imageMessage": (b"WhatsApp Image Keys", "image"),
    "videoMessage": (b"WhatsApp Video Keys", "video"),
    "audioMessage": (b"WhatsApp Audio Keys", "audio"),
    "documentMessage": (b"WhatsApp Document Keys", "document"),
    "stickerMessage": (b"WhatsApp Image Keys", "image"),
}
KIND = {"imageMessage": "image", "videoMessage": "video", "audioMessage": "audio",
        "documentMessage": "document", "stickerMessage": "sticker"}
MEDIA_PATH = "/api/media/"
OCTET_STREAM = "application/octet-stream"
# type/subtype with optional parameters, printable ASCII only (RFC 9110 media-type, loosely): anything
# else a peer puts in `mimetype` is served as application/octet-stream.
_MIMETYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
                       r"(\s*;\s*[A-Za-z0-9_.-]{1,64}=[A-Za-z0-9_.\-\"]{1,64}){0,4}$")


@dataclass(frozen=True)
class MediaRef:
    """Everything GET /api/media/<id> needs to fetch, check and name one file (no file content)."""

    kind: str
    mimetype: str
    file_name: str | None
    url: str
    direct_path: str
    media_key: bytes
    file_sha256: bytes
    file_enc_sha256: bytes
    size: int
    key_info: bytes
    mms_type: str


def media_part(message) -> tuple[str, object] | None:
    """(field, part) of the first downloadable part of a waE2E.Message, as whatsmeow's DownloadAny
    picks it; None for a message without one."""
    for field in PARTS:
        if message.HasField(field):
            return field, getattr(message, field)
    return None


def kind_of(field: str, part) -> str:
    if field == "audioMessage" and getattr(part, "PTT", False):
        return "voice_note"
    return KIND[field]


def safe_mimetype(value: str) -> str:
    value = (value or "").strip()
    return value if _MIMETYPE.match(value) else OCTET_STREAM


def describe(message, message_id: str) -> dict | None:
    """The `media` object of a `message` event; None when the message carries no file."""
    found = media_part(message)
    if found is None:
        return None
    field, part = found
    fields = {f.name for f, _ in part.ListFields()}

    def present(name):
        return getattr(part, name) if name in fields else None

    return {
        "kind": kind_of(field, part),
        "mimetype": present("mimetype"),
        "size": present("fileLength"),
        "caption": present("caption"),
        "fileName": present("fileName"),
        "seconds": present("seconds"),
        "width": present("width"),
        "height": present("height"),
        "url": MEDIA_PATH + message_id,
    }


def media_ref(message) -> MediaRef | None:
    """What fetching the file needs; None when the message has no file or cannot be fetched (no key,
    or neither url nor direct path)."""
    found = media_part(message)
    if found is None:
        return None
    field, part = found
    if not part.mediaKey or not (part.URL or part.directPath):
        return None
    key_info, mms_type = PARTS[field]
    return MediaRef(
        kind=kind_of(field, part), mimetype=safe_mimetype(part.mimetype),
        file_name=getattr(part, "fileName", "") or None, url=part.URL, direct_path=part.directPath,
        media_key=bytes(part.mediaKey), file_sha256=bytes(part.fileSHA256),
        file_enc_sha256=bytes(part.fileEncSHA256), size=int(part.fileLength), key_info=key_info,
        mms_type=mms_type,
    )
