"""The simulator's records: its error, a linked device, a message the client sent."""

from __future__ import annotations

from dataclasses import dataclass, field

from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as E2EMessage

from .binxml import JID, Node
from .chatactions import PeerView, peer_view
from .prekeys import PreKeyPool


class SimulatorError(RuntimeError):
    """A test asked the simulator for something it cannot do in its current state."""


@dataclass
class DeviceRecord:
    """A companion device the simulated account has linked."""

    jid: JID
    lid: JID
    noise_pub: bytes
    identity_pub: bytes
    registration_id: int = 0
    signed_prekey: tuple[int, bytes, bytes] | None = None  # (id, pub, signature)
    pool: PreKeyPool = field(default_factory=PreKeyPool)  # one-time pre-keys on the server (prekeys.py)
    removed: bool = False

    @property
    def prekeys(self) -> dict[int, bytes]:
        """The one-time pre-keys the server still holds for this device."""
        return self.pool.keys


@dataclass
class SentMessage:
    """A <message> the client sent, with its text when the simulator could decrypt it."""

    to: str  # as addressed on the wire (whatsmeow sends 1:1 messages to the LID)
    recipient_pn: str | None  # the phone-number JID, when the client names it (peer_recipient_pn)
    id: str
    type: str
    text: str | None
    node: Node
    message: E2EMessage | None = None  # the decrypted content (for the contact's device 0)
    group_reads: dict[str, str | None] = field(default_factory=dict)  # group sends: member device -> text
    # Devices whose libsignal would drop this message as a duplicate (ratchet.DuplicateMessage): the
    # client re-used a message key, its Signal state having gone back in time.
    dropped: dict[str, str] = field(default_factory=dict)
    sim: "object | None" = field(default=None, repr=False)

    def media_bytes(self) -> bytes:
        """What the contact's phone shows for this image/audio/document: downloaded from the upload
        host, checked (SHA-256 of blob and file, MAC) and decrypted with the message's media key."""
        if self.message is None or self.sim is None:
            raise SimulatorError(f"message {self.id} was not decrypted")
        return self.sim.media.open(self.message)

    def peer_view(self) -> PeerView:
        """What this message does on the contact's phone: a new message, or a reaction, an edit or a
        revoke of message `target` (chatactions.py)."""
        if self.message is None:
            raise SimulatorError(f"message {self.id} was not decrypted")
        return peer_view(self.node, self.message)
