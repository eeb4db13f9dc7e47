"""The simulated contacts' side of Signal for 1:1 messages with the client.

A Contact is one WhatsApp user (one device) the simulator plays. It keeps one Signal session per
device of the client it talks to (ratchet.py: the Double Ratchet as go.mau.fi/libsignal has it), the
current one first and older ones after it (libsignal's SessionRecord keeps previous states and tries
them: state/record/SessionRecord.go, session/SessionCipher.go `decryptWithRecord`). A PreKeySignalMessage
whose base key names a session we already have decrypts on that session (SessionBuilder.go `Process`:
`HasSessionState(version, baseKey)`), as whatsmeow keeps sending pkmsg until it hears back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .ratchet import DJB, VERSION_BYTE, DuplicateMessage, Session, SignalError, parse
from .xeddsa import KeyPair

__all__ = ["Contact", "DuplicateMessage", "PreKeyBundle", "Session", "SignalError", "pad_v2", "unpad_v2", "DJB",
           "VERSION_BYTE"]

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
class Contact:
    """A WhatsApp user (one device) the simulator plays: keys, and its sessions with client devices."""

    jid: str
    lid: str
    push_name: str = "Sim Contact"
    identity: KeyPair = field(default_factory=KeyPair)
    registration_id: int = field(default_factory=lambda: int.from_bytes(os.urandom(2), "big") | 1)
    signed_prekey_id: int = 1
    signed_prekey: KeyPair = field(default_factory=KeyPair)
    prekeys: dict[int, KeyPair] = field(default_factory=dict)
    answers_retries: bool = True  # False: an old client that ignores retry receipts
    sessions: dict[str, list[Session]] = field(default_factory=dict)  # client device -> current first
    linked: dict[int, "Contact"] = field(default_factory=dict)  # this user's other devices (1, 2...)
    sender_keys: dict[str, object] = field(default_factory=dict)  # group -> our senderkeys.SenderKey
    distributed: dict[str, set] = field(default_factory=dict)  # group -> client devices that have it
    group_keys: dict[tuple, object] = field(default_factory=dict)  # (group, client device) -> received key

    def __post_init__(self) -> None:
        self.signed_prekey_signature = self.identity.sign(DJB + self.signed_prekey.pub)
        for i in range(1, 21):
            self.prekeys[i] = KeyPair()

    # -------------------------------------------------------- sessions

    def session(self, device: str) -> Session | None:
        """The current session with that client device, if any."""
        found = self.sessions.get(device)
        return found[0] if found else None

    def start_session(self, device: str, bundle: PreKeyBundle) -> Session:
        """A new session from the device's pre-key bundle (we are Alice); it becomes the current one."""
        session = Session.as_alice(self.identity, self.registration_id, bundle)
        self.sessions.setdefault(device, []).insert(0, session)
        return session

    def encrypt_for(self, device: str, plaintext: bytes) -> tuple[str, bytes]:
        """("msg" | "pkmsg", bytes) on the current session with the device."""
        session = self.session(device)
        if session is None:
            raise SignalError(f"{self.jid} has no session with {device}")
        return session.encrypt(plaintext)

    def encrypt_pkmsg(self, bundle: PreKeyBundle, plaintext: bytes, device: str = "") -> bytes:
        """A PreKeySignalMessage on a new session with the client's device."""
        kind, data = self.start_session(device, bundle).encrypt(plaintext)
        assert kind == "pkmsg"
        return data

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

    def decrypt(self, enc_type: str, data: bytes, device: str = "") -> bytes:
        if data[:1] != VERSION_BYTE:
            raise SignalError("unsupported Signal message version")
        known = self.sessions.setdefault(device, [])
        if enc_type == "pkmsg":
            fields = parse(data[1:])
            their_identity, their_base = bytes(fields[3])[1:], bytes(fields[2])[1:]
            inner = bytes(fields[4])
            same = next((s for s in known if s.base_key == their_base), None)
            if same is not None:
                return same.decrypt(inner)
            if fields.get(6, self.signed_prekey_id) != self.signed_prekey_id:
                raise SignalError("pkmsg names a signed pre-key this contact never published")
            one_time = None
            if 1 in fields:
                one_time = self.prekeys.get(fields[1])
                if one_time is None:
                    raise SignalError(f"pkmsg names one-time pre-key {fields[1]}, used or never published")
            session = Session.as_bob(self.identity, self.signed_prekey, one_time, their_identity, their_base)
            plaintext = session.decrypt(inner)
            if 1 in fields:
                del self.prekeys[fields[1]]
            known.insert(0, session)
            return plaintext
        errors, duplicate = [], False
        for session in list(known):
            try:
                plaintext = session.decrypt(data)
            except SignalError as exc:
                errors.append(str(exc))
                duplicate = duplicate or isinstance(exc, DuplicateMessage)
                continue
            known.remove(session)
            known.insert(0, session)  # SessionRecord.promoteState
            return plaintext
        kind = DuplicateMessage if duplicate else SignalError
        raise kind(f"no session of {self.jid} with {device or 'the client'} decrypts it: {errors}")


def pad_v2(message: bytes) -> bytes:
    """whatsmeow padMessage: 1-15 bytes, each equal to the pad length."""
    n = (os.urandom(1)[0] & 0x0F) or 0x0F
    return message + bytes([n]) * n


def unpad_v2(plaintext: bytes) -> bytes:
    n = plaintext[-1] if plaintext else 0
    if not 1 <= n <= len(plaintext) or plaintext[-n:] != bytes([n]) * n:
        raise SignalError("bad message padding")
    return plaintext[:-n]
