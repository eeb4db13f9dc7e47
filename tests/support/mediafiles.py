"""Small real media files for the send tests: images made with Pillow, Ogg/Opus voice notes built page
by page (RFC 3533 framing with its CRC, RFC 7845 OpusHead/OpusTags, 20 ms silence packets)."""

from __future__ import annotations

import io
import struct


def image(kind: str = "PNG", size=(64, 48), color=(200, 30, 30)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=kind)
    return out.getvalue()


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_TABLE = _crc_table()


def _crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _TABLE[((crc >> 24) & 0xFF) ^ byte]
    return crc


def _page(packets: list[bytes], granule: int, sequence: int, flags: int, serial: int = 0x5EED) -> bytes:
    lacing = b""
    for packet in packets:
        lacing += b"\xff" * (len(packet) // 255) + bytes([len(packet) % 255])
    header = b"OggS" + struct.pack("<BBqIIIB", 0, flags, granule, serial, sequence, 0, len(lacing)) + lacing
    page = header + b"".join(packets)
    return page[:22] + struct.pack("<I", _crc(page)) + page[26:]


def ogg_opus(seconds: float, pre_skip: int = 312) -> bytes:
    """A valid Ogg/Opus stream of about `seconds` of silence (48 kHz granule positions)."""
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, pre_skip, 48000, 0, 0)
    tags = b"OpusTags" + struct.pack("<I", 4) + b"test" + struct.pack("<I", 0)
    pages = [_page([head], 0, 0, 0x02), _page([tags], 0, 1, 0)]
    frames = int(seconds * 50)
    granule, sequence = pre_skip, 2
    for start in range(0, frames, 50):
        count = min(50, frames - start)
        granule += 960 * count
        last = start + count >= frames
        pages.append(_page([b"\xf8\xff\xfe"] * count, granule, sequence, 0x04 if last else 0))
        sequence += 1
    return b"".join(pages)
