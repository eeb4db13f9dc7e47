"""The server side of WhatsApp's Noise_XX_25519_AESGCM_SHA256 handshake, and the framed transport.

Mirrors whatsmeow's client (socket/noisehandshake.go, socket/noisesocket.go, handshake.go):
the hash starts as the 32-byte pattern name, every ciphertext and public key is mixed into it,
each DH result re-keys AES-GCM through HKDF-SHA256 with the running salt, nonces are a 32-bit
big-endian counter, and the server proves itself with a certificate chain signed by the root
key compiled into the client (here: the simulator's own root, patched into the test copy).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import threading
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from neonize.proto.waCert.WACert_pb2 import CertChain
from neonize.proto.waWa6.WAWebProtobufsWa6_pb2 import ClientPayload, HandshakeMessage

from .xeddsa import KeyPair

PATTERN = b"Noise_XX_25519_AESGCM_SHA256\x00\x00\x00\x00"
CONN_HEADER = b"WA\x06\x03"  # magic "WA", version 6, token dictionary version 3


class HandshakeError(Exception):
    """The client spoke something other than the expected handshake."""


def _iv(counter: int) -> bytes:
    return b"\x00" * 8 + struct.pack(">I", counter)


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt or b"\x00" * 32, ikm, hashlib.sha256).digest()
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


class _HandshakeState:
    def __init__(self) -> None:
        self.hash = PATTERN  # exactly 32 bytes, so used as is
        self.salt = PATTERN
        self.key = AESGCM(PATTERN)
        self.counter = 0
        self.authenticate(CONN_HEADER)

    def authenticate(self, data: bytes) -> None:
        self.hash = hashlib.sha256(self.hash + data).digest()

    def mix_key(self, secret: bytes) -> None:
        self.counter = 0
        okm = hkdf(secret, self.salt, b"", 64)
        self.salt, self.key = okm[:32], AESGCM(okm[32:])

    def encrypt(self, plaintext: bytes) -> bytes:
        ct = self.key.encrypt(_iv(self.counter), plaintext, self.hash)
        self.counter += 1
        self.authenticate(ct)
        return ct

    def decrypt(self, ciphertext: bytes) -> bytes:
        pt = self.key.decrypt(_iv(self.counter), ciphertext, self.hash)
        self.counter += 1
        self.authenticate(ciphertext)
        return pt

    def split(self) -> tuple[bytes, bytes]:
        okm = hkdf(b"", self.salt, b"", 64)
        return okm[:32], okm[32:]  # (client's write key, client's read key)


_process_root: KeyPair | None = None
_process_root_lock = threading.Lock()


def process_root() -> KeyPair:
    """The root key every simulator of this process signs with (what the patched client trusts): one
    per process, so they share one patched copy of neonize (patch.shared_patched_neonize). Each
    simulator still has its own intermediate and static keys."""
    global _process_root
    with _process_root_lock:
        if _process_root is None:
            _process_root = KeyPair()
        return _process_root


class NoiseCertificates:
    """A root key (what the client trusts), an intermediate, and the server's static key."""

    def __init__(self, root: KeyPair | None = None, lifetime: int = 86400 * 30):
        self.root = root or KeyPair()
        self.intermediate = KeyPair()
        self.static = KeyPair()
        now = int(time.time())
        inter = CertChain.NoiseCertificate.Details(
            serial=1, issuerSerial=0, key=self.intermediate.pub,
            notBefore=now - 3600, notAfter=now + lifetime,
        ).SerializeToString()
        leaf = CertChain.NoiseCertificate.Details(
            serial=2, issuerSerial=1, key=self.static.pub,
            notBefore=now - 3600, notAfter=now + lifetime,
        ).SerializeToString()
        self.chain = CertChain(
            intermediate=CertChain.NoiseCertificate(details=inter, signature=self.root.sign(inter)),
            leaf=CertChain.NoiseCertificate(details=leaf, signature=self.intermediate.sign(leaf)),
        ).SerializeToString()


class FrameReader:
    """Splits the client's byte stream (3-byte big-endian lengths) into frames."""

    def __init__(self) -> None:
        self.buffer = b""
        self.header_seen = False

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        if not self.header_seen:
            if len(self.buffer) < 4:
                return []
            if self.buffer[:4] != CONN_HEADER:
                raise HandshakeError(f"unexpected connection header {self.buffer[:4]!r}")
            self.buffer = self.buffer[4:]
            self.header_seen = True
        frames = []
        while len(self.buffer) >= 3:
            n = int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < 3 + n:
                break
            frames.append(self.buffer[3 : 3 + n])
            self.buffer = self.buffer[3 + n :]
        return frames


def frame(data: bytes) -> bytes:
    return len(data).to_bytes(3, "big") + data


class ServerHandshake:
    """Runs one handshake; `respond` answers the hello, `finish` reads the client's payload."""

    def __init__(self, certs: NoiseCertificates) -> None:
        self.certs = certs
        self.state = _HandshakeState()
        self.ephemeral = KeyPair()
        self.client_ephemeral = b""

    def respond(self, hello_frame: bytes) -> bytes:
        msg = HandshakeMessage()
        msg.ParseFromString(hello_frame)
        client_eph = msg.clientHello.ephemeral
        if len(client_eph) != 32:
            raise HandshakeError("client hello without a 32-byte ephemeral key")
        self.client_ephemeral = client_eph
        st = self.state
        st.authenticate(client_eph)
        st.authenticate(self.ephemeral.pub)
        st.mix_key(self.ephemeral.dh(client_eph))
        static_ct = st.encrypt(self.certs.static.pub)
        st.mix_key(self.certs.static.dh(client_eph))
        cert_ct = st.encrypt(self.certs.chain)
        reply = HandshakeMessage(
            serverHello=HandshakeMessage.ServerHello(
                ephemeral=self.ephemeral.pub, static=static_ct, payload=cert_ct
            )
        )
        return reply.SerializeToString()

    def finish(self, finish_frame: bytes) -> tuple[bytes, ClientPayload, "NoiseTransport"]:
        msg = HandshakeMessage()
        msg.ParseFromString(finish_frame)
        st = self.state
        client_static = st.decrypt(msg.clientFinish.static)
        st.mix_key(self.ephemeral.dh(client_static))
        payload = ClientPayload()
        payload.ParseFromString(st.decrypt(msg.clientFinish.payload))
        client_write, client_read = st.split()
        return client_static, payload, NoiseTransport(read_key=client_write, write_key=client_read)


class NoiseTransport:
    """AES-GCM with per-direction counters; the caller serialises writes."""

    def __init__(self, read_key: bytes, write_key: bytes) -> None:
        self._read = AESGCM(read_key)
        self._write = AESGCM(write_key)
        self._read_counter = 0
        self._write_counter = 0

    def decrypt(self, ciphertext: bytes) -> bytes:
        pt = self._read.decrypt(_iv(self._read_counter), ciphertext, None)
        self._read_counter += 1
        return pt

    def encrypt(self, plaintext: bytes) -> bytes:
        ct = self._write.encrypt(_iv(self._write_counter), plaintext, None)
        self._write_counter += 1
        return ct
