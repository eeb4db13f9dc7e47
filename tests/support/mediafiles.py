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


#: Issue 21's 34-byte lossless WebP that claims 13000 x 13000 pixels: its entropy codes have one symbol
#: each, so every pixel costs 0 bits and the same bitstream decodes at any size (676 MB at this one).
WEBP_BOMB = bytes.fromhex("524946461a000000574542505650384c0e0000002fc7f2b10c071011fd0f4444ff03")


def webp_bomb(width: int = 13000, height: int = 13000) -> bytes:
    """WEBP_BOMB with another canvas size: the VP8L header's 14-bit width-1 and height-1 (RFC 9649
    3.2.1) rewritten, the rest unchanged."""
    bits = int.from_bytes(WEBP_BOMB[21:25], "little")
    bits = (bits & ~0x0FFFFFFF) | (width - 1) | ((height - 1) << 14)
    return WEBP_BOMB[:21] + bits.to_bytes(4, "little") + WEBP_BOMB[25:]


def png_of_zeros(width: int, height: int) -> bytes:
    """An 8-bit RGBA PNG whose every byte is zero (the test never holds the decoded image: 13000 x 13000
    is 676 MB raw, about 670 KB as PNG).

    Deflating 676 MB took 2 s of CPU. Rows go in groups of 16, each group ended with Z_FULL_FLUSH,
    which resets the compressor's state (zlib manual): every full group then deflates to the same
    bytes, so one is compressed and repeated. The zlib wrapper is written here (RFC 1950: header, raw
    deflate, Adler-32 of the whole image data)."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = 16  # a group per block: 52 bytes a row at 13000 pixels, against 51 for one whole stream
    row = b"\0" * (1 + 4 * width)  # filter type 0, then the row's RGBA bytes
    group, (full, rest) = row * rows, divmod(height, rows)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: the wrapper is ours
    block = packer.compress(group) + packer.flush(zlib.Z_FULL_FLUSH)
    tail = packer.compress(row * rest) + packer.flush()  # the last rows, in the stream's final block
    adler = 1
    for _ in range(full):
        adler = zlib.adler32(group, adler)
    adler = zlib.adler32(row * rest, adler)
    data = b"\x78\xda" + block * full + tail + struct.pack(">I", adler)  # 0x78 0xda: deflate, level 9
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # 8-bit RGBA, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
