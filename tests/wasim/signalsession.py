"""Just enough of the Signal protocol for 1:1 text messages between a contact and the client.

Written from go.mau.fi/libsignal, which whatsmeow uses (ratchet/Ratchet.go, keys/root,
keys/chain, keys/message, protocol/SignalMessage.go, serialize/ProtoBufferSerializer.go):
X3DH with a 0xFF*32 "discontinuity" prefix and HKDF info "WhisperText"; root-key steps with
"WhisperRatchet"; message keys HKDF(HMAC(chain, 0x01), info "WhisperMessageKeys") -> AES-CBC key,
MAC key, IV; the MAC is HMAC-SHA256 over both identity keys and the serialized message, cut to 8
bytes. The receiver re-serializes the protobuf to check that MAC, so fields are written here in
Go's order, zeros included. Only what tests need: each delivery starts a fresh session (the client accepts that), and
the simulator reads the client's messages on the first chains of either direction; no
further DH ratchet steps, no skipped-key store.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .noise import hkdf
from .xeddsa import KeyPair

VERSION_BYTE = b"\x33"  # (3 << 4) | 3
DJB = b"\x05"  # key type prefix of serialized Curve25519 public keys


class SignalError(ValueError):
    """A message the simulator cannot decrypt."""


# ------------------------------------------------------------ protobuf by hand


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(num: int, data: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def _field_int(num: int, value: int) -> bytes:
    return _varint(num << 3) + _varint(value)


def _parse(data: bytes) -> dict[int, object]:
    fields, i = {}, 0
    while i < len(data):
        key, i = _read_varint(data, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            fields[num], i = _read_varint(data, i)
        elif wire == 2:
            n, i = _read_varint(data, i)
            fields[num], i = data[i : i + n], i + n
        else:
            raise SignalError(f"unexpected protobuf wire type {wire}")
    return fields


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(data):
            raise SignalError("truncated protobuf")
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return result, i


# ------------------------------------------------------------ key schedule


def _message_keys(chain_key: bytes, counter: int) -> tuple[bytes, bytes, bytes]:
    for _ in range(counter):
        chain_key = hmac.new(chain_key, b"\x02", hashlib.sha256).digest()
    seed = hmac.new(chain_key, b"\x01", hashlib.sha256).digest()
    km = hkdf(seed, b"", b"WhisperMessageKeys", 80)
    return km[:32], km[32:64], km[64:80]


def _root_step(root_key: bytes, their_ratchet: bytes, our_ratchet: KeyPair) -> tuple[bytes, bytes]:
    okm = hkdf(our_ratchet.dh(their_ratchet), root_key, b"WhisperRatchet", 64)
    return okm[:32], okm[32:]


def _mac(mac_key: bytes, sender_identity: bytes, receiver_identity: bytes, serialized: bytes) -> bytes:
    return hmac.new(mac_key, DJB + sender_identity + DJB + receiver_identity + serialized, hashlib.sha256).digest()[:8]


def _signal_message(ratchet_pub: bytes, counter: int, ciphertext: bytes) -> bytes:
    return (
        _field_bytes(1, DJB + ratchet_pub)
        + _field_int(2, counter)
        + _field_int(3, 0)
        + _field_bytes(4, ciphertext)
    )


@dataclass
class PreKeyBundle:
    """What the server hands out for a device: identity, signed pre-key, one one-time pre-key."""

    registration_id: int
    identity_pub: bytes
    signed_prekey_id: int
    signed_prekey_pub: bytes
    prekey_id: int | None
    prekey_pub: bytes | None


@dataclass
class _Chain:
    ratchet_pub: bytes  # the sender's ratchet key this chain belongs to
    chain_key: bytes  # at index 0
    their_identity: bytes


@dataclass
class Contact:
    """A WhatsApp user (one device) the simulator plays: keys, and the sessions it can read."""

    jid: str
    lid: str
    push_name: str = "Sim Contact"
    identity: KeyPair = field(default_factory=KeyPair)
    registration_id: int = field(default_factory=lambda: int.from_bytes(os.urandom(2), "big") | 1)
    signed_prekey_id: int = 1
    signed_prekey: KeyPair = field(default_factory=KeyPair)
    prekeys: dict[int, KeyPair] = field(default_factory=dict)
    _receiving: list[_Chain] = field(default_factory=list)
    _pending_roots: list[tuple[bytes, KeyPair, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.signed_prekey_signature = self.identity.sign(DJB + self.signed_prekey.pub)
        for i in range(1, 21):
            self.prekeys[i] = KeyPair()

    # -------------------------------------------------------- sending (we are Alice)

    def encrypt_pkmsg(self, bundle: PreKeyBundle, plaintext: bytes) -> bytes:
        """A PreKeySignalMessage starting a new session with the client's device."""
        base = KeyPair()
        secrets = [
            self.identity.dh(bundle.signed_prekey_pub),
            base.dh(bundle.identity_pub),
            base.dh(bundle.signed_prekey_pub),
        ]
        if bundle.prekey_pub is not None:
            secrets.append(base.dh(bundle.prekey_pub))
        derived = hkdf(b"\xff" * 32 + b"".join(secrets), b"", b"WhisperText", 64)
        root_key = derived[:32]
        ratchet = KeyPair()
        next_root, sending_chain = _root_step(root_key, bundle.signed_prekey_pub, ratchet)
        # The client answers from a fresh ratchet key of its own (libsignal SessionCipher
        # getOrCreateChainKey), on a chain rooted in next_root and our ratchet key.
        self._pending_roots.append((next_root, ratchet, bundle.identity_pub))
        cipher_key, mac_key, iv = _message_keys(sending_chain, 0)
        padder = padding.PKCS7(128).padder()
        enc = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).encryptor()
        ciphertext = enc.update(padder.update(plaintext) + padder.finalize()) + enc.finalize()
        serialized = VERSION_BYTE + _signal_message(ratchet.pub, 0, ciphertext)
        message = serialized + _mac(mac_key, self.identity.pub, bundle.identity_pub, serialized)
        body = b""
        if bundle.prekey_id is not None:
            body += _field_int(1, bundle.prekey_id)
        body += (
            _field_bytes(2, DJB + base.pub)
            + _field_bytes(3, DJB + self.identity.pub)
            + _field_bytes(4, message)
            + _field_int(5, self.registration_id)
            + _field_int(6, bundle.signed_prekey_id)
        )
        return VERSION_BYTE + body

    # -------------------------------------------------------- receiving

    def bundle_nodes_material(self) -> dict:
        """The pieces of this contact's pre-key bundle, for the server's key-fetch answer."""
        prekey_id = min(self.prekeys) if self.prekeys else None
        return {
            "registration_id": self.registration_id,
            "identity": self.identity.pub,
            "skey": (self.signed_prekey_id, self.signed_prekey.pub, self.signed_prekey_signature),
            "key": (prekey_id, self.prekeys[prekey_id].pub) if prekey_id is not None else None,
        }

    def decrypt(self, enc_type: str, data: bytes) -> bytes:
        if data[:1] != VERSION_BYTE:
            raise SignalError("unsupported Signal message version")
        if enc_type == "pkmsg":
            fields = _parse(data[1:])
            their_identity = bytes(fields[3])[1:]
            their_base = bytes(fields[2])[1:]
            if fields.get(6, self.signed_prekey_id) != self.signed_prekey_id:
                raise SignalError("pkmsg names a signed pre-key this contact never published")
            one_time = self.prekeys.pop(fields[1], None) if 1 in fields else None
            secrets = [
                self.signed_prekey.dh(their_identity),
                self.identity.dh(their_base),
                self.signed_prekey.dh(their_base),
            ]
            if one_time is not None:
                secrets.append(one_time.dh(their_base))
            derived = hkdf(b"\xff" * 32 + b"".join(secrets), b"", b"WhisperText", 64)
            inner = bytes(fields[4])
            ratchet_pub = bytes(_parse(inner[1:-8])[1])[1:]
            _, chain = _root_step(derived[:32], ratchet_pub, self.signed_prekey)
            self._receiving.append(_Chain(ratchet_pub, chain, their_identity))
            data = inner
        fields = _parse(data[1:-8])
        ratchet_pub, counter, ciphertext = bytes(fields[1])[1:], fields.get(2, 0), bytes(fields[4])
        if not any(c.ratchet_pub == ratchet_pub for c in self._receiving):
            # A reply on a session we started: its first chain comes from our last root key.
            for root, ratchet, their_identity in self._pending_roots:
                _, chain = _root_step(root, ratchet_pub, ratchet)
                self._receiving.append(_Chain(ratchet_pub, chain, their_identity))
        for chain in reversed(self._receiving):
            if chain.ratchet_pub != ratchet_pub:
                continue
            cipher_key, mac_key, iv = _message_keys(chain.chain_key, counter)
            if not hmac.compare_digest(_mac(mac_key, chain.their_identity, self.identity.pub, data[:-8]), data[-8:]):
                continue
            dec = Cipher(algorithms.AES(cipher_key), modes.CBC(iv)).decryptor()
            unpadder = padding.PKCS7(128).unpadder()
            padded = dec.update(ciphertext) + dec.finalize()
            return unpadder.update(padded) + unpadder.finalize()
        raise SignalError("no session of this contact matches the message's ratchet key and MAC")


def pad_v2(message: bytes) -> bytes:
    """whatsmeow padMessage: 1-15 bytes, each equal to the pad length."""
    n = (os.urandom(1)[0] & 0x0F) or 0x0F
    return message + bytes([n]) * n


def unpad_v2(plaintext: bytes) -> bytes:
    n = plaintext[-1] if plaintext else 0
    if not 1 <= n <= len(plaintext) or plaintext[-n:] != bytes([n]) * n:
        raise SignalError("bad message padding")
    return plaintext[:-n]
