"""Helpers for running the real bot against the WhatsApp simulator (tests/test_sim_bot.py).

- `sim_overrides(sim)`: the environment that points a bot's neonize at the simulator.
- `printed_qr_texts(output)` / `decode_printed_qr(lines)`: the QR codes the bot printed in its
  stdout, read back the way a phone camera would: rendered to an image and decoded by zxing.
- `WebhookReceiver`: a real HTTP server on 127.0.0.1 that records what the bot POSTs to it.
"""

from __future__ import annotations

import http.server
import threading
import time
from dataclasses import dataclass

from qrterminal import BEGIN_MARKER, END_MARKER

# qrterminal draws the LIGHT modules (dark terminals): character -> (upper light, lower light).
_LIGHT = {"\u2588": (True, True), "\u2580": (True, False), "\u2584": (False, True), " ": (False, False)}
_PIXELS_PER_MODULE = 4


def sim_overrides(sim) -> dict[str, str]:
    """HTTPS_PROXY, SSL_CERT_FILE and PYTHONPATH (patched neonize first) for a bot's base_env()."""
    env = sim.client_env({})
    return {k: env[k] for k in ("HTTPS_PROXY", "https_proxy", "SSL_CERT_FILE", "PYTHONPATH")}


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


def decode_printed_qr(lines: list[str]) -> str:
    """The text of one printed QR code, decoded from an image of it (dark modules black)."""
    import zxingcpp
    from PIL import Image

    width = max(len(line) for line in lines)
    rows: list[list[bool]] = []  # True = dark module
    for line in lines:
        upper, lower = [], []
        for char in line.ljust(width):
            up_light, low_light = _LIGHT[char]
            upper.append(not up_light)
            lower.append(not low_light)
        rows += [upper, lower]
    scale = _PIXELS_PER_MODULE
    image = Image.new("L", (width * scale, len(rows) * scale), 255)
    pixels = image.load()
    for y, row in enumerate(rows):
        for x, dark in enumerate(row):
            if dark:
                for dy in range(scale):
                    for dx in range(scale):
                        pixels[x * scale + dx, y * scale + dy] = 0
    results = zxingcpp.read_barcodes(image)
    texts = [r.text for r in results if r.format == zxingcpp.BarcodeFormat.QRCode]
    if len(texts) != 1:
        raise AssertionError(f"expected one QR code in the printed block, zxing found {len(texts)}")
    return texts[0]


def printed_qr_texts(output: str) -> list[str]:
    return [decode_printed_qr(block) for block in printed_qr_blocks(output)]


@dataclass
class ReceivedPost:
    path: str
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 recording every POST; answers 204."""

    def __init__(self) -> None:
        self.posts: list[ReceivedPost] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._cond:
                    receiver.posts.append(ReceivedPost(self.path, dict(self.headers.items()), body))
                    receiver._cond.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):  # keep pytest's output clean
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def start(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def wait_for_post(self, timeout: float = 20.0, after: int = 0) -> ReceivedPost:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.posts) <= after:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout:g}s waiting for a webhook POST")
                self._cond.wait(left)
            return self.posts[after]
