"""How the client reaches the simulator: an HTTP CONNECT proxy that terminates TLS for
web.whatsapp.com with a test CA, then a websocket server for /ws/chat.

whatsmeow dials wss://web.whatsapp.com/ws/chat with Go's HTTP transport (socket/framesocket.go,
client.go: a clone of http.DefaultTransport, whose Proxy is ProxyFromEnvironment), so the
client honours HTTPS_PROXY; Go on Linux takes its roots from SSL_CERT_FILE. Only the websocket
host is intercepted: every other CONNECT is refused and recorded, so a test can see it.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import socket
import ssl
import struct
import threading
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

WS_HOST = "web.whatsapp.com"
MEDIA_HOSTS = ("mmg.whatsapp.net",)  # the upload host the simulator's media_conn names (media.py)
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def make_tls_files(directory: str) -> tuple[str, str, str]:
    """A throw-away CA and a web.whatsapp.com certificate; returns (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wasim test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, WS_HOST)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(WS_HOST), *(x509.DNSName(h) for h in MEDIA_HOSTS),
                 x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = tuple(os.path.join(directory, n) for n in ("ca.pem", "cert.pem", "key.pem"))
    with open(paths[0], "wb") as f:
        f.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[2], "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return paths  # type: ignore[return-value]


class WebSocketClosed(Exception):
    pass


class WebSocket:
    """Server end of one RFC 6455 connection (binary messages; no extensions negotiated)."""

    def __init__(self, sock: ssl.SSLSocket):
        self.sock = sock
        self._write_lock = threading.Lock()
        self._pending = b""

    def _read_exact(self, n: int) -> bytes:
        while len(self._pending) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise WebSocketClosed("peer closed the TCP connection")
            self._pending += chunk
        data, self._pending = self._pending[:n], self._pending[n:]
        return data

    def recv(self) -> bytes:
        """The next complete data message; answers pings; raises WebSocketClosed on close."""
        message = b""
        while True:
            b1, b2 = self._read_exact(2)
            opcode, fin = b1 & 0x0F, b1 & 0x80
            length = b2 & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read_exact(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read_exact(8))[0]
            mask = self._read_exact(4) if b2 & 0x80 else b""
            payload = self._read_exact(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 0x8:
                self._send_frame(0x8, payload[:2])
                raise WebSocketClosed("peer sent a close frame")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            message += payload
            if fin:
                return message

    def send(self, data: bytes) -> None:
        self._send_frame(0x2, data)

    def close(self, code: int = 1000) -> None:
        try:
            self._send_frame(0x8, struct.pack(">H", code))
        except OSError:
            pass

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            header = bytes([0x80 | opcode, n])
        elif n < 1 << 16:
            header = bytes([0x80 | opcode, 126]) + struct.pack(">H", n)
        else:
            header = bytes([0x80 | opcode, 127]) + struct.pack(">Q", n)
        with self._write_lock:
            self.sock.sendall(header + payload)


def _read_http_head(sock) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)  # byte by byte: nothing after the head may be consumed
        if not chunk:
            raise ConnectionError("connection closed during HTTP head")
        data += chunk
        if len(data) > 65536:
            raise ConnectionError("HTTP head too large")
    return data


class InterceptingProxy:
    """CONNECT proxy on 127.0.0.1; hands each accepted websocket to `on_websocket`."""

    def __init__(self, cert_file: str, key_file: str, on_websocket: Callable[[WebSocket, dict], None],
                 on_media: Callable[[str, str, bytes], tuple[int, bytes]] | None = None):
        self.on_websocket = on_websocket
        # HTTPS requests to the media hosts (method, target, body) -> (status, JSON body).
        self.on_media = on_media
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(cert_file, key_file)
        self.tls.set_alpn_protocols(["http/1.1"])
        self.refused_hosts: list[str] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, name="wasim-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        try:
            # close() alone does not wake a thread blocked in accept() on Linux; shutdown() does.
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            _hard_close(conn)
        self._thread.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="wasim-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            head = _read_http_head(conn).decode("latin-1")
            method, target, _ = head.split("\r\n", 1)[0].split(" ", 2)
            host = target.rsplit(":", 1)[0]
            media = self.on_media is not None and host in MEDIA_HOSTS
            if method != "CONNECT" or (host != WS_HOST and not media):
                self.refused_hosts.append(target)
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            tls = self.tls.wrap_socket(conn, server_side=True)
            with self._lock:
                self._conns.discard(conn)
                self._conns.add(tls)
            conn = tls
            if media:
                self._serve_http(tls)
                return
            request = _read_http_head(tls).decode("latin-1")
            lines = request.split("\r\n")
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            path = lines[0].split(" ")[1]
            key = headers.get("sec-websocket-key", "")
            if path != "/ws/chat" or headers.get("upgrade", "").lower() != "websocket" or not key:
                tls.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                return
            accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
            tls.sendall(
                (
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                ).encode()
            )
            self.on_websocket(WebSocket(tls), headers)
        except (OSError, ValueError, ConnectionError, ssl.SSLError):
            pass
        finally:
            _hard_close(conn)
            with self._lock:
                self._conns.discard(conn)


    def _serve_http(self, tls) -> None:
        """HTTP/1.1 requests on one TLS connection (Go's client keeps it alive), until it closes."""
        reader = _BufferedReader(tls)
        while True:
            try:
                head = reader.read_head()
            except ConnectionError:
                return
            lines = head.split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body = reader.read_chunked()
            else:
                body = reader.read_exact(int(headers.get("content-length") or 0))
            status, answer, *rest = self.on_media(method, target, body)
            content_type = rest[0] if rest else "application/json"
            reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
                      404: "Not Found", 410: "Gone"}.get(status, "Error")
            if hasattr(answer, "read"):  # a file (a peer's upload, download.py): streamed, never in memory
                with answer:
                    size = os.fstat(answer.fileno()).st_size
                    tls.sendall(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                                f"Content-Length: {size}\r\n\r\n".encode())
                    while chunk := answer.read(1 << 16):
                        tls.sendall(chunk)
                continue
            tls.sendall(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(answer)}\r\n\r\n".encode() + answer
            )


class _BufferedReader:
    def __init__(self, sock) -> None:
        self.sock = sock
        self.pending = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        self.pending += chunk

    def read_head(self) -> str:
        while b"\r\n\r\n" not in self.pending:
            if len(self.pending) > 65536:
                raise ConnectionError("HTTP head too large")
            self._fill()
        head, self.pending = self.pending.split(b"\r\n\r\n", 1)
        return head.decode("latin-1")

    def read_exact(self, n: int) -> bytes:
        while len(self.pending) < n:
            self._fill()
        data, self.pending = self.pending[:n], self.pending[n:]
        return data

    def read_line(self) -> bytes:
        while b"\r\n" not in self.pending:
            self._fill()
        line, self.pending = self.pending.split(b"\r\n", 1)
        return line

    def read_chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self.read_line().split(b";")[0], 16)
            if size == 0:
                while self.read_line():  # trailers up to the empty line
                    pass
                return body
            body += self.read_exact(size)
            self.read_exact(2)


def _hard_close(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        conn.close()
    except OSError:
        pass
