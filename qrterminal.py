"""The pairing QR code as text for `heroku logs`, and as an SVG for the `/qr` page.

Two rows of modules share one line of text (half blocks), so the code is half as tall as it is wide in
characters and fits a terminal. Blocks are drawn for the LIGHT modules: terminals and Heroku's log
viewer show light text on a dark background, so the code reads the right way round there. Each line
is a separate stdout line (Heroku splits lines over 10,000 bytes; ours are ~60 characters).
"""

from __future__ import annotations

import io

import qrcode
import qrcode.image.svg

BEGIN_MARKER = "===== WHATSAPP QR: scan with WhatsApp > Settings > Linked devices > Link a device ====="
END_MARKER = "===== END WHATSAPP QR ====="

# (upper module light, lower module light) -> character
_HALF_BLOCKS = {
    (True, True): "\u2588",  # full block
    (True, False): "\u2580",  # upper half
    (False, True): "\u2584",  # lower half
    (False, False): " ",
}


def _matrix(data: str) -> list[list[bool]]:
    """True where a module is dark; includes the 4-module quiet zone the standard requires."""
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_L, border=4)
    code.add_data(data)
    code.make(fit=True)
    return code.get_matrix()


def qr_lines(data: str) -> list[str]:
    """The QR code as lines of half-block characters (light modules drawn)."""
    matrix = _matrix(data)
    width = len(matrix[0])
    if len(matrix) % 2:
        matrix.append([False] * width)  # a light padding row below the quiet zone
    lines = []
    for top, bottom in zip(matrix[0::2], matrix[1::2]):
        lines.append("".join(_HALF_BLOCKS[(not t, not b)] for t, b in zip(top, bottom)))
    return lines


def qr_block(data: str) -> list[str]:
    """The lines to print: markers around the code, so it is easy to find in a busy log."""
    return [BEGIN_MARKER, *qr_lines(data), END_MARKER]


def qr_svg(data: str) -> str:
    """The QR code as an inline SVG document (no image library needed)."""
    image = qrcode.make(data, image_factory=qrcode.image.svg.SvgPathImage, border=4, box_size=10)
    out = io.BytesIO()
    image.save(out)
    return out.getvalue().decode()


def qr_png(data: str, box_size: int = 8) -> bytes:
    """The QR code as a PNG (black on white, quiet zone included), for GET /api/qr?format=png.
    qrcode draws it with Pillow, which neonize already requires (requirements.txt pins it)."""
    from qrcode.image.pil import PilImage

    image = qrcode.make(data, image_factory=PilImage, border=4, box_size=box_size)
    out = io.BytesIO()
    image.save(out)  # PilImage saves as PNG unless told otherwise
    return out.getvalue()
