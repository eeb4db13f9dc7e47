"""Signatures made with Curve25519 (X25519) keys, the way libsignal makes and checks them.

WhatsApp signs with the same keys it uses for Diffie-Hellman: the noise certificate chain, the
account signature of a paired device and signed pre-keys all use libsignal's scheme
(go.mau.fi/libsignal ecc/SignCurve25519.go): sign with the clamped X25519 scalar as an Ed25519
secret scalar, and carry the sign bit of the Edwards public key in the top bit of the signature.
`cryptography` only signs with seeds, so the Edwards arithmetic is done here with Python ints
(slow, but a handful of signatures per test is nothing).
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = (-121665 * pow(121666, P - 2, P)) % P
_BY = 4 * pow(5, P - 2, P) % P


def _recover_x(y: int, sign: int) -> int:
    xx = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(xx, (P + 3) // 8, P)
    if (x * x - xx) % P:
        x = x * pow(2, (P - 1) // 4, P) % P
    if x & 1 != sign:
        x = P - x
    return x


_B = (_recover_x(_BY, 0), _BY, 1, _recover_x(_BY, 0) * _BY % P)


def _add(p, q):
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * D % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _scalar_base(k: int):
    result, addend = (0, 1, 1, 0), _B
    while k:
        if k & 1:
            result = _add(result, addend)
        addend = _add(addend, addend)
        k >>= 1
    return result


def _encode(point) -> bytes:
    x, y, z, _ = point
    zi = pow(z, P - 2, P)
    x, y = x * zi % P, y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _clamp(private: bytes) -> int:
    k = bytearray(private)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    return int.from_bytes(k, "little")


class KeyPair:
    """An X25519 key pair; `pub` is the 32-byte Montgomery u-coordinate."""

    def __init__(self, private: bytes | None = None):
        if private is None:
            private = os.urandom(32)
        self.priv = _clamp(private).to_bytes(32, "little")
        self._key = X25519PrivateKey.from_private_bytes(self.priv)
        self.pub = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def dh(self, their_pub: bytes) -> bytes:
        return self._key.exchange(X25519PublicKey.from_public_bytes(their_pub))

    def sign(self, message: bytes) -> bytes:
        return sign(self.priv, message)


def sign(private: bytes, message: bytes) -> bytes:
    a = _clamp(private) % L
    public = _encode(_scalar_base(a))
    nonce = hashlib.sha512(b"\xfe" + b"\xff" * 31 + private + message + os.urandom(64)).digest()
    r = int.from_bytes(nonce, "little") % L
    encoded_r = _encode(_scalar_base(r))
    h = int.from_bytes(hashlib.sha512(encoded_r + public + message).digest(), "little") % L
    s = bytearray(((h * a + r) % L).to_bytes(32, "little"))
    s[31] |= public[31] & 0x80
    return encoded_r + bytes(s)


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """libsignal's check: Montgomery u -> Edwards y, sign bit from the signature."""
    if len(public) != 32 or len(signature) != 64:
        return False
    u = int.from_bytes(public, "little") & ((1 << 255) - 1)
    y = (u - 1) * pow(u + 1, P - 2, P) % P
    ed = bytearray(y.to_bytes(32, "little"))
    ed[31] |= signature[63] & 0x80
    sig = bytearray(signature)
    sig[63] &= 0x7F
    try:
        Ed25519PublicKey.from_public_bytes(bytes(ed)).verify(bytes(sig), message)
        return True
    except (InvalidSignature, ValueError):
        return False

