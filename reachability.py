"""Whether WhatsApp answers, asked without neonize: the probe before each connect.

Every neonize connect() leaks a database handle (see whatsapp.DEFAULT_MAX_CONNECTS), so an attempt
that would fail anyway must not reach neonize. The probe walks the first steps of whatsmeow's own dial
and stops before anything is logged in.
"""

from __future__ import annotations

import os
import time
from typing import Callable


# Where whatsmeow dials (socket/constants.go: URL, Origin, WAConnHeader = "WA", magic 6, dict 3).
WS_HOST = "web.whatsapp.com"
WS_PATH = "/ws/chat"
WA_CONN_HEADER = b"WA\x06\x03"
PROBE_TIMEOUT = 10.0


class Unreachable(OSError):
    """WhatsApp's websocket did not answer the probe; neonize's connect() would fail the same way."""


def probe_whatsapp(timeout: float = PROBE_TIMEOUT) -> bool:
    """Walk the first steps of whatsmeow's own dial, without neonize: proxy CONNECT (HTTPS_PROXY, as
    Go's ProxyFromEnvironment), TLS for web.whatsapp.com, the websocket upgrade at /ws/chat, and
    the Noise hello (WA header + ClientHello, answered by a ServerHello). Nothing is stored or
    logged in. Returns True when WhatsApp answered; raises `Unreachable` with what failed; returns
    False when this probe cannot take the same path as Go (a SOCKS or HTTPS proxy): then the
    caller lets neonize try, as before.

    Why: every neonize connect() leaks a database handle (see DEFAULT_MAX_CONNECTS), so an attempt
    that would fail anyway must not reach neonize."""
    import base64
    import socket
    import ssl
    import struct
    import urllib.parse
    import urllib.request

    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get("https")
    if proxy and urllib.request.proxy_bypass_environment(WS_HOST, proxies):
        proxy = None
    deadline = time.monotonic() + timeout

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Unreachable(f"no answer within {timeout:g}s")
        return remaining

    if proxy:
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
        if parts.scheme != "http":
            return False
        address = (parts.hostname or "", parts.port or 80)
    else:
        address = (WS_HOST, 443)
    try:
        raw = socket.create_connection(address, timeout=left())
    except OSError as exc:
        raise Unreachable(f"cannot reach {'proxy ' if proxy else ''}{address[0]}:{address[1]}: {exc}") from None
    sock = raw
    try:
        if proxy:
            request = f"CONNECT {WS_HOST}:443 HTTP/1.1\r\nHost: {WS_HOST}:443\r\n"
            if parts.username:
                user = urllib.parse.unquote(parts.username) + ":" + urllib.parse.unquote(parts.password or "")
                request += f"Proxy-Authorization: Basic {base64.b64encode(user.encode()).decode()}\r\n"
            raw.sendall((request + "\r\n").encode())
            status = _read_http_head(raw, left).split(b"\r\n", 1)[0]
            if status.split(b" ")[1:2] != [b"200"]:
                raise Unreachable(f"proxy refused CONNECT: {status.decode('latin-1')}")
        raw.settimeout(left())
        sock = ssl.create_default_context().wrap_socket(raw, server_hostname=WS_HOST)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET {WS_PATH} HTTP/1.1\r\nHost: {WS_HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Origin: https://{WS_HOST}\r\n\r\n"
            ).encode()
        )
        head = _read_http_head(sock, left)
        status = head.split(b"\r\n", 1)[0]
        if status.split(b" ")[1:2] != [b"101"]:
            raise Unreachable(f"websocket upgrade refused: {status.decode('latin-1')}")
        pending = head.split(b"\r\n\r\n", 1)[1]

        from neonize.proto.waWa6.WAWebProtobufsWa6_pb2 import HandshakeMessage

        hello = HandshakeMessage(clientHello=HandshakeMessage.ClientHello(ephemeral=os.urandom(32)))
        body = hello.SerializeToString()
        sock.sendall(_ws_client_frame(0x2, WA_CONN_HEADER + len(body).to_bytes(3, "big") + body))
        message = _ws_read_message(sock, pending, left)
        reply = HandshakeMessage()
        n = int.from_bytes(message[:3], "big")
        reply.ParseFromString(message[3 : 3 + n])
        if len(reply.serverHello.ephemeral) != 32:
            raise Unreachable("no Noise server hello from the websocket")
        try:
            sock.sendall(_ws_client_frame(0x8, struct.pack(">H", 1000)))
        except OSError:
            pass
        return True
    except Unreachable:
        raise
    except (OSError, ValueError) as exc:  # ssl.SSLError, timeouts, resets, a garbled reply
        raise Unreachable(f"{type(exc).__name__}: {exc}") from None
    finally:
        for s in {sock, raw}:
            try:
                s.close()
            except OSError:
                pass


def _read_http_head(sock, left: Callable[[], float]) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > 16384:
            raise Unreachable("oversized HTTP answer")
        sock.settimeout(left())
        chunk = sock.recv(4096)
        if not chunk:
            raise Unreachable("connection closed before an HTTP answer" + (f": {data[:80]!r}" if data else ""))
        data += chunk
    return data


def _ws_client_frame(opcode: int, payload: bytes) -> bytes:
    import struct

    n = len(payload)
    if n < 126:
        header = bytes([0x80 | opcode, 0x80 | n])
    elif n < 1 << 16:
        header = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack(">H", n)
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack(">Q", n)
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _ws_read_message(sock, pending: bytes, left: Callable[[], float]) -> bytes:
    """The first data message the server sends (server frames are unmasked)."""
    buffer = pending

    def need(n: int) -> bytes:
        nonlocal buffer
        while len(buffer) < n:
            sock.settimeout(left())
            chunk = sock.recv(65536)
            if not chunk:
                raise Unreachable("websocket closed before the Noise server hello")
            buffer += chunk
        data, buffer = buffer[:n], buffer[n:]
        return data

    message = b""
    while True:
        b1, b2 = need(2)
        length = b2 & 0x7F
        if length == 126:
            length = int.from_bytes(need(2), "big")
        elif length == 127:
            length = int.from_bytes(need(8), "big")
        if length > 1 << 20:
            raise Unreachable("oversized websocket frame")
        mask = need(4) if b2 & 0x80 else b""
        payload = need(length)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        opcode = b1 & 0x0F
        if opcode == 0x8:
            raise Unreachable("websocket closed before the Noise server hello")
        if opcode in (0x9, 0xA):
            continue
        message += payload
        if b1 & 0x80:
            return message
