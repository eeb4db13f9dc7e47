"""Turn the QR text the bot prints back into an image and decode it, as a phone camera would."""

from __future__ import annotations

import zxingcpp
from PIL import Image

from qrterminal import BEGIN_MARKER, END_MARKER

# qrterminal draws the LIGHT modules (dark terminals): character -> (upper light, lower light).
_LIGHT = {"\u2588": (True, True), "\u2580": (True, False), "\u2584": (False, True), " ": (False, False)}
_PIXELS_PER_MODULE = 4


def printed_qr_blocks(output: str) -> list[list[str]]:
    """The code lines of every complete QR block in the bot's output, in order.

    Only lines made of half-block characters count: a log line from another thread that lands
    between the markers is not part of the picture."""
    blocks, current = [], None
    for line in output.splitlines():
        if line == BEGIN_MARKER:
            current = []
        elif line == END_MARKER and current is not None:
            blocks.append(current)
            current = None
        elif current is not None and line and set(line) <= set(_LIGHT):
            current.append(line)
    return blocks


def decode_qr_lines(lines: list[str]) -> list[str]:
    """Every QR code zxing finds in an image of the printed lines (dark modules black)."""
    width = max(len(line) for line in lines)
    rows: list[list[bool]] = []  # True = dark module
    for line in lines:
        halves = [_LIGHT[char] for char in line.ljust(width)]
        rows.append([not upper for upper, _ in halves])
        rows.append([not lower for _, lower in halves])
    scale = _PIXELS_PER_MODULE
    image = Image.new("L", (width * scale, len(rows) * scale), 255)
    pixels = image.load()
    for y, row in enumerate(rows):
        for x, dark in enumerate(row):
            if dark:
                for dy in range(scale):
                    for dx in range(scale):
                        pixels[x * scale + dx, y * scale + dy] = 0
    return [r.text for r in zxingcpp.read_barcodes(image) if r.format == zxingcpp.BarcodeFormat.QRCode]


def decode_printed_qr(lines: list[str]) -> str:
    """The text of one printed QR code; fails unless exactly one code is found."""
    texts = decode_qr_lines(lines)
    if len(texts) != 1:
        raise AssertionError(f"expected one QR code in the printed block, zxing found {len(texts)}")
    return texts[0]


def printed_qr_texts(output: str) -> list[str]:
    """The decoded text of every QR code in the bot's output, in order."""
    return [decode_printed_qr(block) for block in printed_qr_blocks(output)]
