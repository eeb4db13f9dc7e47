"""The primary phone's part of linking a companion device: what it signs and sends.

Built to pass whatsmeow's checks in pair.go (handlePair): an HMAC over the signed identity with
the companion's ADV secret (from the QR, or derived in code pairing), and an account signature
(prefix 6,0 || details || companion identity key) by the phone's identity key.
"""

from __future__ import annotations

import base64
import os
import hashlib
import hmac
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from neonize.proto.waAdv.WAAdv_pb2 import (
    ADVDeviceIdentity,
    ADVSignedDeviceIdentity,
    ADVSignedDeviceIdentityHMAC,
)

from . import xeddsa
from .noise import hkdf

ACCOUNT_SIGNATURE_PREFIX = b"\x06\x00"
DEVICE_SIGNATURE_PREFIX = b"\x06\x01"


class QRError(ValueError):
    """A QR payload that is not what neonize shows for linking."""


@dataclass(frozen=True)
class QRPayload:
    ref: str
    noise_pub: bytes
    identity_pub: bytes
    adv_secret: bytes
    client_type: str

    @classmethod
    def parse(cls, text: str) -> "QRPayload":
        # whatsmeow makeQRData: [https://wa.me/settings/linked_devices#]ref,noise,identity,adv[,type]
        body = text.strip().split("#", 1)[-1]
        parts = body.split(",")
        if len(parts) < 4:
            raise QRError("a linking QR has at least 4 comma-separated fields (ref,noise,identity,adv)")
        try:
            noise, identity, adv = (base64.b64decode(p, validate=True) for p in parts[1:4])
        except ValueError as exc:
            raise QRError(f"QR key fields are not base64: {exc}") from None
        if len(noise) != 32 or len(identity) != 32 or len(adv) != 32:
            raise QRError("QR keys must be 32 bytes each")
        return cls(parts[0], noise, identity, adv, parts[4] if len(parts) > 4 else "")


class Phone:
    """The account's primary device: its identity key and key index."""

    def __init__(self, phone_number: str, lid_user: str):
        self.phone_number = phone_number
        self.lid_user = lid_user
        self.identity = xeddsa.KeyPair()
        self.key_index = 0

    def device_identity(self, companion_identity_pub: bytes, adv_secret: bytes) -> tuple[bytes, int]:
        """The serialized ADVSignedDeviceIdentityHMAC for pair-success, and its key index."""
        self.key_index += 1
        details = ADVDeviceIdentity(
            rawID=int.from_bytes(hashlib.sha256(companion_identity_pub).digest()[:4], "big"),
            timestamp=int(time.time()),
            keyIndex=self.key_index,
        ).SerializeToString()
        signature = self.identity.sign(ACCOUNT_SIGNATURE_PREFIX + details + companion_identity_pub)
        signed = ADVSignedDeviceIdentity(
            details=details,
            accountSignatureKey=self.identity.pub,
            accountSignature=signature,
        ).SerializeToString()
        container = ADVSignedDeviceIdentityHMAC(
            details=signed, HMAC=hmac.new(adv_secret, signed, hashlib.sha256).digest()
        )
        return container.SerializeToString(), self.key_index

    def check_device_signature(self, companion_identity_pub: bytes, self_signed: bytes) -> bool:
        """Checks the companion's pair-device-sign reply (whatsmeow generateDeviceSignature)."""
        ident = ADVSignedDeviceIdentity()
        ident.ParseFromString(self_signed)
        message = DEVICE_SIGNATURE_PREFIX + ident.details + companion_identity_pub + self.identity.pub
        return xeddsa.verify(companion_identity_pub, message, ident.deviceSignature)


def _link_code_ctr(code: str, salt: bytes, iv: bytes, data: bytes) -> bytes:
    # whatsmeow pair-code.go: PBKDF2-SHA256(code, salt, 2<<16 rounds) keys AES-CTR.
    key = hashlib.pbkdf2_hmac("sha256", code.encode(), salt, 2 << 16, 32)
    ctr = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return ctr.update(data) + ctr.finalize()


class CodePairing:
    """The phone's side of one link-code pairing, from the typed code to the ADV secret."""

    def __init__(self, phone: Phone, code: str, wrapped_companion_ephemeral: bytes):
        self.phone = phone
        self.code = code.replace("-", "").strip().upper()
        if len(self.code) != 8:
            raise QRError("a pairing code has 8 characters (XXXX-XXXX)")
        if len(wrapped_companion_ephemeral) != 80:
            raise QRError("wrapped companion ephemeral key must be 80 bytes")
        salt, iv, enc = (wrapped_companion_ephemeral[:32], wrapped_companion_ephemeral[32:48],
                         wrapped_companion_ephemeral[48:80])
        self.companion_ephemeral = _link_code_ctr(self.code, salt, iv, enc)
        self.ephemeral = xeddsa.KeyPair()
        salt, iv = os.urandom(32), os.urandom(16)
        self.wrapped_primary_ephemeral = salt + iv + _link_code_ctr(self.code, salt, iv, self.ephemeral.pub)

    def finish(self, wrapped_key_bundle: bytes, companion_identity_pub: bytes) -> tuple[bytes, bytes]:
        """Unwraps the companion's key bundle; returns (companion identity key, ADV secret)."""
        shared = self.ephemeral.dh(self.companion_ephemeral)
        salt, nonce, sealed = wrapped_key_bundle[:32], wrapped_key_bundle[32:44], wrapped_key_bundle[44:]
        key = hkdf(shared, salt, b"link_code_pairing_key_bundle_encryption_key", 32)
        bundle = AESGCM(key).decrypt(nonce, sealed, None)  # fails loudly on a wrong code
        identity_pub, primary_pub, adv_random = bundle[:32], bundle[32:64], bundle[64:96]
        if primary_pub != self.phone.identity.pub or identity_pub != companion_identity_pub:
            raise QRError("key bundle does not name this phone and companion")
        identity_shared = self.phone.identity.dh(identity_pub)
        adv_secret = hkdf(shared + identity_shared + adv_random, b"", b"adv_secret", 32)
        return identity_pub, adv_secret
