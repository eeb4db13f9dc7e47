"""One Signal session (the Double Ratchet) between a simulated contact and one device of the client.

Written from go.mau.fi/libsignal, which whatsmeow uses: ratchet/RatchetingSession.go (X3DH for
Alice and Bob: secrets prefixed by 0xFF*32, HKDF info "WhisperText" -> root key + chain key; Alice
keeps a receiver chain on Bob's signed pre-key and steps her root once to send, Bob sends on the
derived chain from his signed pre-key), keys/root/RootKey.go `CreateChain` ("WhisperRatchet"),
keys/chain/ChainKey.go (HMAC 0x01 -> message key seed, 0x02 -> next chain key),
keys/message/MessageKeys.go ("WhisperMessageKeys": AES key, MAC key, IV), session/SessionCipher.go
(`Encrypt`: a PreKeySignalMessage while the session is unacknowledged; `getOrCreateChainKey`: a new
ratchet key from the other side steps the root twice, receive then send; `getOrCreateMessageKeys`:
skipped message keys are kept, an old counter is refused), state/record/SessionState.go.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .noise import hkdf
from .xeddsa import KeyPair

VERSION_BYTE = b"\x33"  # (3 << 4) | 3
DJB = b"\x05"  # key type prefix of serialized Curve25519 public keys
MAX_SKIP = 2000  # libsignal's maxMessageKeys: a counter further ahead is refused


class SignalError(ValueError):
    """A message the simulator cannot decrypt."""


class DuplicateMessage(SignalError):
    """A counter (or sender-key iteration) whose key was used already. libsignal answers it with
    ErrOldCounter and whatsmeow drops the message without a retry receipt (message.go
    `decryptMessages`: "Ignoring message"): the sender's state went back in time, e.g. a restore."""


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


def field_bytes(num: int, data: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def field_int(num: int, value: int) -> bytes:
    return _varint(num << 3) + _varint(value)


def parse(data: bytes) -> dict[int, object]:
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


def message_keys(chain_key: bytes) -> tuple[bytes, bytes, bytes]:
    seed = hmac.new(chain_key, b"\x01", hashlib.sha256).digest()
    km = hkdf(seed, b"", b"WhisperMessageKeys", 80)
    return km[:32], km[32:64], km[64:80]


def next_chain(chain_key: bytes) -> bytes:
    return hmac.new(chain_key, b"\x02", hashlib.sha256).digest()


def root_step(root_key: bytes, their_ratchet: bytes, our_ratchet: KeyPair) -> tuple[bytes, bytes]:
    okm = hkdf(our_ratchet.dh(their_ratchet), root_key, b"WhisperRatchet", 64)
    return okm[:32], okm[32:]


def mac(mac_key: bytes, sender_identity: bytes, receiver_identity: bytes, serialized: bytes) -> bytes:
    return hmac.new(mac_key, DJB + sender_identity + DJB + receiver_identity + serialized, hashlib.sha256).digest()[:8]


def aes_cbc(key: bytes, iv: bytes, data: bytes, encrypt: bool) -> bytes:
    cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
    if encrypt:
        padder = padding.PKCS7(128).padder()
        enc = cipher.encryptor()
        return enc.update(padder.update(data) + padder.finalize()) + enc.finalize()
    dec = cipher.decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(dec.update(data) + dec.finalize()) + unpadder.finalize()
    except ValueError as exc:
        raise SignalError(f"bad CBC padding: {exc}") from exc


def signal_message(ratchet_pub: bytes, counter: int, previous_counter: int, ciphertext: bytes) -> bytes:
    """SignalMessage's protobuf, fields in Go's order with zeros written (the MAC covers these bytes)."""
    return (
        field_bytes(1, DJB + ratchet_pub)
        + field_int(2, counter)
        + field_int(3, previous_counter)
        + field_bytes(4, ciphertext)
    )


def x3dh(secrets: list[bytes]) -> tuple[bytes, bytes]:
    derived = hkdf(b"\xff" * 32 + b"".join(secrets), b"", b"WhisperText", 64)
    return derived[:32], derived[32:]


# ------------------------------------------------------------ the session


@dataclass
class _Receiving:
    chain_key: bytes  # at index `counter`
    counter: int = 0
    skipped: dict[int, bytes] = field(default_factory=dict)  # counter -> chain key at that counter


@dataclass
class Session:
    """SessionState: the root, our sending chain, the receiving chains by the other side's ratchet key."""

    our_identity: KeyPair
    their_identity: bytes
    root_key: bytes
    sending_ratchet: KeyPair
    sending_chain: bytes
    base_key: bytes  # Alice's base key: what names the session (SessionRecord.HasSessionState)
    sending_counter: int = 0
    previous_counter: int = 0
    receiving: dict[bytes, _Receiving] = field(default_factory=dict)
    # Alice's (pre-key id, signed pre-key id, base key, our registration id) until the first reply:
    # every message she sends until then is a PreKeySignalMessage (SessionCipher.Encrypt).
    unacknowledged: tuple | None = None

    # ---------------------------------------------------- creation

    @classmethod
    def as_alice(cls, our_identity: KeyPair, our_registration_id: int, bundle) -> "Session":
        base = KeyPair()
        secrets = [
            our_identity.dh(bundle.signed_prekey_pub),
            base.dh(bundle.identity_pub),
            base.dh(bundle.signed_prekey_pub),
        ]
        if bundle.prekey_pub is not None:
            secrets.append(base.dh(bundle.prekey_pub))
        root, chain = x3dh(secrets)
        ratchet = KeyPair()
        next_root, sending_chain = root_step(root, bundle.signed_prekey_pub, ratchet)
        return cls(
            our_identity=our_identity, their_identity=bundle.identity_pub, root_key=next_root,
            sending_ratchet=ratchet, sending_chain=sending_chain, base_key=base.pub,
            receiving={bundle.signed_prekey_pub: _Receiving(chain)},
            unacknowledged=(bundle.prekey_id, bundle.signed_prekey_id, base.pub, our_registration_id),
        )

    @classmethod
    def as_bob(cls, our_identity: KeyPair, signed_prekey: KeyPair, one_time: KeyPair | None,
               their_identity: bytes, their_base: bytes) -> "Session":
        secrets = [signed_prekey.dh(their_identity), our_identity.dh(their_base), signed_prekey.dh(their_base)]
        if one_time is not None:
            secrets.append(one_time.dh(their_base))
        root, chain = x3dh(secrets)
        return cls(our_identity=our_identity, their_identity=their_identity, root_key=root,
                   sending_ratchet=signed_prekey, sending_chain=chain, base_key=their_base)

    # ---------------------------------------------------- sending

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        """("msg" | "pkmsg", the serialized message), advancing the sending chain."""
        cipher_key, mac_key, iv = message_keys(self.sending_chain)
        ciphertext = aes_cbc(cipher_key, iv, plaintext, encrypt=True)
        serialized = VERSION_BYTE + signal_message(
            self.sending_ratchet.pub, self.sending_counter, self.previous_counter, ciphertext)
        message = serialized + mac(mac_key, self.our_identity.pub, self.their_identity, serialized)
        self.sending_chain = next_chain(self.sending_chain)
        self.sending_counter += 1
        if self.unacknowledged is None:
            return "msg", message
        prekey_id, signed_prekey_id, base_pub, registration_id = self.unacknowledged
        body = b""
        if prekey_id is not None:
            body += field_int(1, prekey_id)
        body += (
            field_bytes(2, DJB + base_pub)
            + field_bytes(3, DJB + self.our_identity.pub)
            + field_bytes(4, message)
            + field_int(5, registration_id)
            + field_int(6, signed_prekey_id)
        )
        return "pkmsg", VERSION_BYTE + body

    # ---------------------------------------------------- receiving

    def decrypt(self, message: bytes) -> bytes:
        """Decrypts a SignalMessage; the session changes only when it succeeds."""
        if message[:1] != VERSION_BYTE or len(message) < 9:
            raise SignalError("unsupported Signal message version")
        fields = parse(message[1:-8])
        ratchet_pub, counter, ciphertext = bytes(fields[1])[1:], fields.get(2, 0), bytes(fields[4])
        trial = copy.deepcopy(self)
        chain = trial._chain_for(ratchet_pub)
        chain_key = trial._message_chain_key(chain, counter)
        cipher_key, mac_key, iv = message_keys(chain_key)
        if not hmac.compare_digest(mac(mac_key, self.their_identity, self.our_identity.pub, message[:-8]),
                                   message[-8:]):
            raise SignalError("MAC mismatch: not this session")
        plaintext = aes_cbc(cipher_key, iv, ciphertext, encrypt=False)
        trial.unacknowledged = None  # a message from them: they have the session (ClearUnackPreKeyMessage)
        self.__dict__.update(trial.__dict__)
        return plaintext

    def _chain_for(self, their_ratchet: bytes) -> _Receiving:
        if their_ratchet in self.receiving:
            return self.receiving[their_ratchet]
        receive_root, receive_chain = root_step(self.root_key, their_ratchet, self.sending_ratchet)
        ours = KeyPair()
        send_root, send_chain = root_step(receive_root, their_ratchet, ours)
        self.root_key = send_root
        self.previous_counter = max(self.sending_counter - 1, 0)
        self.sending_ratchet, self.sending_chain, self.sending_counter = ours, send_chain, 0
        self.receiving[their_ratchet] = _Receiving(receive_chain)
        return self.receiving[their_ratchet]

    @staticmethod
    def _message_chain_key(chain: _Receiving, counter: int) -> bytes:
        if counter < chain.counter:
            if counter not in chain.skipped:
                raise DuplicateMessage(f"old counter {counter}: that message key was used already")
            return chain.skipped.pop(counter)
        if counter - chain.counter > MAX_SKIP:
            raise SignalError(f"counter {counter} is too far ahead")
        while chain.counter < counter:
            chain.skipped[chain.counter] = chain.chain_key
            chain.chain_key = next_chain(chain.chain_key)
            chain.counter += 1
        key = chain.chain_key
        chain.chain_key = next_chain(chain.chain_key)
        chain.counter += 1
        return key
