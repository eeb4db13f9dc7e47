"""Signal sender keys (group messages), as go.mau.fi/libsignal's groups/ package has them.

groups/ratchet/SenderChainKey.go: message key seed = HMAC-SHA256(chain key, 0x01), next chain key =
HMAC(chain key, 0x02); groups/ratchet/SenderMessageKey.go: HKDF(seed, no salt, "WhisperGroup", 48) ->
IV (16) + AES-256 key (32); groups/GroupCipher.go: AES-CBC with PKCS#7, the chain moves one step per
message, skipped keys are kept (at most 2000 ahead); protocol/SenderKeyMessage.go: version byte,
protobuf {id, iteration, ciphertext}, then a 64-byte XEdDSA signature over both by the sender's
signing key; protocol/SenderKeyDistributionMessage.go: version byte, protobuf {id, iteration, chain
key, signing key (0x05 + 32 bytes)}; groups/GroupSessionBuilder.go `Create` (a random key id, chain
key and signing key pair) and `Process` (a receiving state from the distribution message).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field

from .noise import hkdf
from .ratchet import DJB, VERSION_BYTE, DuplicateMessage, SignalError, aes_cbc, field_bytes, field_int, parse
from .xeddsa import KeyPair, verify

MAX_AHEAD = 2000


def _message_key(chain_key: bytes) -> tuple[bytes, bytes]:
    seed = hmac.new(chain_key, b"\x01", hashlib.sha256).digest()
    derived = hkdf(seed, b"", b"WhisperGroup", 48)
    return derived[:16], derived[16:]  # iv, cipher key


def _next(chain_key: bytes) -> bytes:
    return hmac.new(chain_key, b"\x02", hashlib.sha256).digest()


@dataclass
class SenderKey:
    """Our own sender key in one group (we are the sender)."""

    key_id: int = field(default_factory=lambda: int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF)
    iteration: int = 0
    chain_key: bytes = field(default_factory=lambda: os.urandom(32))
    signing: KeyPair = field(default_factory=KeyPair)

    def distribution(self) -> bytes:
        """The SenderKeyDistributionMessage for the current state."""
        return VERSION_BYTE + (
            field_int(1, self.key_id) + field_int(2, self.iteration)
            + field_bytes(3, self.chain_key) + field_bytes(4, DJB + self.signing.pub)
        )

    def encrypt(self, padded: bytes) -> bytes:
        iv, key = _message_key(self.chain_key)
        body = VERSION_BYTE + (
            field_int(1, self.key_id) + field_int(2, self.iteration) + field_bytes(3, aes_cbc(key, iv, padded, True))
        )
        self.chain_key, self.iteration = _next(self.chain_key), self.iteration + 1
        return body + self.signing.sign(body)


@dataclass
class ReceivedSenderKey:
    """Another sender's key in one group, as a distribution message gave it to us."""

    key_id: int
    iteration: int
    chain_key: bytes
    signing_pub: bytes
    skipped: dict[int, bytes] = field(default_factory=dict)

    @classmethod
    def from_distribution(cls, data: bytes) -> "ReceivedSenderKey":
        if data[:1] != VERSION_BYTE:
            raise SignalError("unsupported sender key distribution version")
        fields = parse(data[1:])
        return cls(fields.get(1, 0), fields.get(2, 0), bytes(fields[3]), bytes(fields[4])[1:])

    def decrypt(self, data: bytes) -> bytes:
        if data[:1] != VERSION_BYTE or len(data) < 65:
            raise SignalError("unsupported sender key message")
        body, signature = data[:-64], data[-64:]
        if not verify(self.signing_pub, body, signature):
            raise SignalError("sender key message signature does not verify")
        fields = parse(body[1:])
        if fields.get(1, 0) != self.key_id:
            raise SignalError(f"sender key id {fields.get(1, 0)} is not the distributed {self.key_id}")
        iteration = fields.get(2, 0)
        if iteration < self.iteration:
            chain = self.skipped.pop(iteration, None)
            if chain is None:
                raise DuplicateMessage(f"sender key iteration {iteration} was used already")
        else:
            if iteration - self.iteration > MAX_AHEAD:
                raise SignalError("sender key iteration too far ahead")
            while self.iteration < iteration:
                self.skipped[self.iteration] = self.chain_key
                self.chain_key, self.iteration = _next(self.chain_key), self.iteration + 1
            chain = self.chain_key
            self.chain_key, self.iteration = _next(self.chain_key), self.iteration + 1
        iv, key = _message_key(chain)
        return aes_cbc(key, iv, bytes(fields[3]), False)
