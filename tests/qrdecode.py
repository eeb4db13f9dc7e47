"""Turn the QR text the bot prints back into an image and decode it, as a phone camera would."""

from __future__ import annotations

import zxingcpp
from PIL import Image

from qrterminal import BEGIN_MARKER, END_MARKER

# character -> (upper module light, lower module light); blocks are drawn for light modules
_HALVES = {"\u2588": (True, True), "\u2580": (True, False), "\u2584": (False, True), " ": (False, False)}


def printed_qr_blocks(output: str) -> list[list[str]]:
    """Every QR block in a log, as its lines (markers excluded). Log prefixes before a marker are kept
    out by cutting each line at the marker's column."""
    blocks, current, column = [], None, 0
    for line in output.splitlines():
        if BEGIN_MARKER in line:
            current, column = [], line.index(BEGIN_MARKER)
        elif END_MARKER in line and current is not None:
            blocks.append(current)
            current = None
        elif current is not None:
            current.append(line[column:])
    return blocks


def decode_qr_lines(lines: list[str], scale: int = 4) -> list[str]:
    rows: list[list[bool]] = []
    for line in lines:
        halves = [_HALVES[ch] for ch in line]
        rows.append([upper for upper, _ in halves])
        rows.append([lower for _, lower in halves])
    width = max(len(r) for r in rows)
    image = Image.new("L", (width * scale, len(rows) * scale), 255)
    pixels = image.load()
    for y, row in enumerate(rows):
        for x, light in enumerate(row):
            if not light:
                for dy in range(scale):
                    for dx in range(scale):
                        pixels[x * scale + dx, y * scale + dy] = 0
    return [result.text for result in zxingcpp.read_barcodes(image)]
