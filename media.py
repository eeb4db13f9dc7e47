"""What the bot checks and computes about media before it sends them: pure functions, no WhatsApp.

- Images: the type is sniffed from the bytes (JPEG, PNG, WebP), never taken from the file name or the
  client's Content-Type; the thumbnail WhatsApp shows before the download is made with Pillow. Width
  and height are read from the file's header before anything is decoded: a few bytes can claim 13000 x
  13000 pixels, which decode to 676 MB (image bombs). Past MAX_IMAGE_PIXELS an image is refused; below
  it the thumbnail is made only when its decode fits THUMBNAIL_DECODE_BUDGET, else the image is sent
  without one.
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


class ImageTooLarge(InvalidMedia):
    """The image has more pixels than the bot takes (MAX_IMAGE_PIXELS); the API answers 413."""


IMAGE_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WebP"}
OGG_OPUS_MIME = "audio/ogg; codecs=opus"
OPUS_RATE = 48000
THUMBNAIL_SIZE = 72  # WhatsApp's own clients send about this size inline

#: Images with more pixels are refused (413 image_too_large) before anything is decoded. It is Pillow's
#: own decompression-bomb line (PIL.Image.MAX_IMAGE_PIXELS), where Pillow only warns (it refuses at
#: twice that, so the 169-megapixel bombs of issue 21 went through). Why refuse rather than send
#: without a preview: an image this large that fits MAX_UPLOAD_BYTES (16 MB: under 1.5 bits a pixel)
#: is flat or synthetic, not a photo, and every phone it reaches would have to decode it too.
MAX_IMAGE_PIXELS = 89_478_485

#: What the thumbnail's decode may hold. The worker idles at about 75 MB and an upload of
#: MAX_UPLOAD_BYTES costs about three times its size on its way to WhatsApp; with this budget a send
#: stays under 300 MB. An image whose decode would cost more is sent without a thumbnail (WhatsApp
#: shows a grey box until the download; the image itself is unchanged).
THUMBNAIL_DECODE_BUDGET = 128 * 1024 * 1024

#: Peak bytes per pixel of Pillow 13's decoders while making the thumbnail, measured (VmHWM of a child
#: process thumbnailing 10- to 27-megapixel images) and rounded up: PNG decodes whole (RGB 4.0, grey
#: 1.2, RGBA 8.1: resizing premultiplies alpha into a second copy); a baseline JPEG decodes at 1/8
#: scale (draft mode, 0.3), a progressive one keeps every coefficient (6.3 for 4:4:4, 8.3 for CMYK);
#: WebP goes through libwebp's animation decoder, two canvases and a copy (17.2).
DECODE_BYTES_PER_PIXEL = {"image/png": 9, "image/jpeg": 1, "progressive jpeg": 9, "image/webp": 18}
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


def check_image(data: bytes) -> dict:
    """{"mimetype", "width", "height", "thumbnail": whether one will be made}, from the header only;
    InvalidMedia when it is no JPEG, PNG or WebP or its header is broken, ImageTooLarge past
    MAX_IMAGE_PIXELS."""
    mimetype = image_type(data)
    width, height, decode_bytes = _header_size(data, mimetype)
    pixels = width * height
    if pixels > MAX_IMAGE_PIXELS:
        raise ImageTooLarge(
            f"the image is {width} x {height} pixels ({pixels / 1e6:.1f} megapixels); the bot sends images of "
            f"up to {MAX_IMAGE_PIXELS / 1e6:.1f} megapixels: scale it down"
        )
    return {"mimetype": mimetype, "width": width, "height": height,
            "thumbnail": 0 < decode_bytes <= THUMBNAIL_DECODE_BUDGET}


def image_facts(data: bytes) -> dict:
    """Width, height and a small JPEG thumbnail; no thumbnail when the decode would pass
    THUMBNAIL_DECODE_BUDGET or Pillow cannot read the image (WhatsApp then shows a grey box until the
    download, the image itself is unchanged)."""
    try:
        facts = check_image(data)
    except InvalidMedia:  # the API refused it already; a direct caller gets no preview, nothing decoded
        return {"width": 0, "height": 0, "thumbnail": b""}
    width, height = facts["width"], facts["height"]
    if not facts["thumbnail"]:
        return {"width": width, "height": height, "thumbnail": b""}
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
            out = io.BytesIO()
            image.convert("RGB").save(out, format="JPEG", quality=60)
            return {"width": width, "height": height, "thumbnail": out.getvalue()}
    except Exception:  # a truncated or damaged file: send it without a preview
        return {"width": width, "height": height, "thumbnail": b""}


def _header_size(data: bytes, mimetype: str) -> tuple[int, int, int]:
    """(width, height, bytes the thumbnail's decode would hold) from the header; nothing is decoded.
    Read here rather than with Pillow's lazy Image.open: for WebP that already builds libwebp's
    animation decoder, whose two canvases (1.35 GB of address space for 13000 x 13000) are allocated
    at open."""
    cost = DECODE_BYTES_PER_PIXEL[mimetype]
    if mimetype == "image/png":
        # PNG: the IHDR chunk comes first (PNG spec 5.2, 11.2.2): width, height as 4-byte big-endian.
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise InvalidMedia("the PNG file is cut or damaged (no IHDR header)")
        width, height = struct.unpack_from(">II", data, 16)
    elif mimetype == "image/webp":
        width, height = _webp_size(data)
    else:
        width, height, progressive = _jpeg_size(data)
        if progressive:
            cost = DECODE_BYTES_PER_PIXEL["progressive jpeg"]
    return width, height, width * height * cost


def _webp_size(data: bytes) -> tuple[int, int]:
    """The canvas size of a WebP file (RFC 9649: the simple lossy "VP8 " and lossless "VP8L" formats,
    and the extended "VP8X" one)."""
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:  # 24-bit canvas width-1 and height-1 (section 2.7)
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:  # 14-bit width-1, height-1 (3.2.1)
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":  # RFC 6386 9.1
        return (int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF)
    raise InvalidMedia("the WebP file is cut or damaged (no VP8, VP8L or VP8X header)")


#: Start-of-frame markers (ITU T.81 table B.1): every 0xC0-0xCF but DHT (C4), JPG (C8), DAC (CC).
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})


def _jpeg_size(data: bytes) -> tuple[int, int, bool]:
    """(width, height, progressive) from a JPEG's frame header, walking the marker segments before it."""
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            break
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # segments without a length
            offset += 2
            continue
        if marker == 0xDA:  # scan data before any frame header
            break
        length = struct.unpack_from(">H", data, offset + 2)[0]
        if marker in _JPEG_FRAMES and len(data) >= offset + 9:
            height, width = struct.unpack_from(">HH", data, offset + 5)
            return width, height, marker in _JPEG_PROGRESSIVE
        offset += 2 + length
    raise InvalidMedia("the JPEG file is cut or damaged (no frame header)")


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
