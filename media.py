"""What the bot checks and computes about media before it sends them: pure functions, no WhatsApp.

- Images: the type is sniffed from the bytes (JPEG, PNG, WebP), never taken from the file name or the
  client's Content-Type; the thumbnail WhatsApp shows before the download is made with Pillow.
- Voice notes: an Ogg file whose first packet is an OpusHead. The duration WhatsApp shows comes from
  the last Ogg page's granule position (Opus always counts at 48 kHz, minus the header's pre-skip;
  RFC 7845 sections 4 and 5.1), so no ffmpeg is needed (Heroku's stack has none).
- Locations: latitude -90..90, longitude -180..180, optional name and address of bounded length.
"""

from __future__ import annotations

import io
import math
import struct


class InvalidMedia(ValueError):
    """The upload is not what the endpoint takes; the message says what was expected."""


IMAGE_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WebP"}
OGG_OPUS_MIME = "audio/ogg; codecs=opus"
OPUS_RATE = 48000
THUMBNAIL_SIZE = 72  # WhatsApp's own clients send about this size inline
MAX_LOCATION_NAME = 256
MAX_LOCATION_ADDRESS = 1024


def image_type(data: bytes) -> str:
    """The image's MIME type from its first bytes; InvalidMedia for anything but JPEG, PNG, WebP."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise InvalidMedia("the file is not a JPEG, PNG or WebP image (checked from its content)")


def image_facts(data: bytes) -> dict:
    """Width, height and a small JPEG thumbnail; empty values when Pillow cannot read the image
    (WhatsApp then shows a grey box until the download, the image itself is unchanged)."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
            out = io.BytesIO()
            image.convert("RGB").save(out, format="JPEG", quality=60)
            return {"width": width, "height": height, "thumbnail": out.getvalue()}
    except Exception:  # a truncated or hostile file: send it without a preview
        return {"width": 0, "height": 0, "thumbnail": b""}


def _ogg_pages(data: bytes):
    """(granule position, serial, payload of the page) for each Ogg page; InvalidMedia when broken."""
    offset = 0
    while offset < len(data):
        if data[offset:offset + 4] != b"OggS" or len(data) < offset + 27:
            raise InvalidMedia("the Ogg file is cut or damaged (no page at byte %d)" % offset)
        version, _flags, granule, serial, _seq, _crc, segments = struct.unpack_from("<BBqIIIB", data, offset + 4)
        if version != 0:
            raise InvalidMedia("unsupported Ogg version")
        table_end = offset + 27 + segments
        if len(data) < table_end:
            raise InvalidMedia("the Ogg file is cut or damaged")
        size = sum(data[offset + 27:table_end])
        if len(data) < table_end + size:
            raise InvalidMedia("the Ogg file is cut (its last page is incomplete)")
        yield granule, serial, data[table_end:table_end + size]
        offset = table_end + size


def opus_duration(data: bytes) -> float:
    """Seconds of an Ogg/Opus file; InvalidMedia when it is not one."""
    if data[:4] != b"OggS":
        raise InvalidMedia("a voice note must be an Ogg/Opus file (.ogg or .opus); this is not Ogg")
    pages = _ogg_pages(data)
    _, serial, first = next(pages)
    if first[:8] != b"OpusHead" or len(first) < 19:
        raise InvalidMedia("the Ogg file holds no Opus audio (no OpusHead): convert it with "
                           "`ffmpeg -i in.mp3 -c:a libopus out.ogg`")
    pre_skip = struct.unpack_from("<H", first, 10)[0]
    last = 0
    for granule, page_serial, _ in pages:
        if page_serial == serial and granule >= 0:  # -1: no packet ends on this page
            last = granule
    return max(0.0, (last - pre_skip) / OPUS_RATE)


def voice_note_seconds(data: bytes) -> int:
    """The duration WhatsApp shows (whole seconds, at least 1)."""
    return max(1, math.ceil(opus_duration(data) - 1e-9))


def location(latitude, longitude, name=None, address=None) -> dict:
    """Validated location fields; InvalidMedia naming the first bad one."""
    values = {}
    for field, value, limit in (("latitude", latitude, 90), ("longitude", longitude, 180)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidMedia(f"{field} must be a number")
        # Compare before converting: JSON's integers have no size limit, and `1` followed by 400 zeros
        # is an int that float() (and math.isfinite) cannot take (OverflowError).
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidMedia(f"{field} must be a number")
        if not -limit <= value <= limit:
            raise InvalidMedia(f"{field} must be between -{limit} and {limit}")
        values[field] = float(value)
    for field, value, limit in (("name", name, MAX_LOCATION_NAME), ("address", address, MAX_LOCATION_ADDRESS)):
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidMedia(f"{field} must be a string")
        if len(value) > limit:
            raise InvalidMedia(f"{field} is longer than {limit} characters")
        values[field] = value
    return values
