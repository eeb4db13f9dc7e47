"""Simulated contacts sending 1:1 messages to a linked device, on sessions they keep.

whatsmeow send.go `sendDM`/`encryptMessageForDevice` is the sender's side followed here: a peer with a
session with the device encrypts on it (a `msg`, or a `pkmsg` while the session is unacknowledged);
a peer without one fetches the device's bundle from the server (prekeys.go `fetchPreKeys`: one
one-time key handed out per fetch) and starts one. Every message is kept, as whatsmeow's
`addRecentMessage` keeps the last 256, so the peer can answer the client's retry receipts (retry.py).
`session="fresh"` is the older behaviour of this simulator: a new session for every message.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as E2EMessage

from .binxml import JID, Node
from .signalsession import Contact, PreKeyBundle, pad_v2

RECENT_MESSAGES = 256  # retry.go recentMessagesSize
SESSION_MODES = ("fresh", "keep")


@dataclass
class PeerMessage:
    """A message a simulated contact sent to a device (whatsmeow's RecentMessage, plus timing)."""

    id: str
    contact: Contact
    device: str  # the client device it went to
    message: bytes  # the serialized waE2E.Message, unpadded (re-padded per encryption, as whatsmeow)
    t: int
    push_name: str
    first_type: str  # "msg" or "pkmsg": how it first went out
    sent_at: float  # time.monotonic() of the first send
    group: str | None = None  # the group JID, for a member's group message (groups.py)
    node_type: str = "text"  # the message node's `type` (send.go getTypeFromMessage): text, media, reaction
    media_type: str | None = None  # the enc node's `mediatype` (getMediaTypeFromMessage)
    edit: str | None = None  # the `edit` attribute (getEditAttribute): "1" edit, "7" revoke


def bundle_for(device, pool_key: tuple[int | None, bytes | None]) -> PreKeyBundle:
    """A DeviceRecord's bundle as the server hands it out, with one key taken from its pool."""
    spk_id, spk_pub, _ = device.signed_prekey
    prekey_id, prekey_pub = pool_key
    return PreKeyBundle(device.registration_id, device.identity_pub, spk_id, spk_pub, prekey_id, prekey_pub)


class PeerSender:
    def __init__(self, sim) -> None:
        self.sim = sim
        self.recent: OrderedDict[str, PeerMessage] = OrderedDict()
        self.nodes: dict[str, Node] = {}  # every delivered message's first node, by id (for tests)
        self.next_key: dict[str, int] = {}  # contact JID -> the one-time key its next fetch gets (tests)

    def fetch_bundle(self, device, contact: Contact) -> PreKeyBundle:
        """The server's answer to the peer's key fetch for this device (one one-time key spent)."""
        key_id, pub, went_low = device.pool.take(contact.jid, self.next_key.pop(contact.jid, None))
        if went_low:
            self.sim.notify_prekey_count(device)
        return bundle_for(device, (key_id, pub))

    def deliver(self, jid: str, contact: Contact, content: "E2EMessage | str", push_name: str, session: str, *,
                node_type: str = "text", media_type: str | None = None, edit: str | None = None,
                message_id: str | None = None) -> str:
        if session not in SESSION_MODES:
            raise ValueError(f"session must be one of {SESSION_MODES}")
        device = self.sim.device_record(jid)
        conn = self.sim.live_connection(jid)
        if device.signed_prekey is None:
            raise self.sim.error(f"{jid} has not uploaded its pre-keys yet")
        if session == "fresh" or contact.session(jid) is None:
            contact.start_session(jid, self.fetch_bundle(device, contact))
        if isinstance(content, str):
            content = E2EMessage(conversation=content)
        message = content.SerializeToString()
        kind, data = contact.encrypt_for(jid, pad_v2(message))
        message_id = message_id or "3EB0" + secrets.token_hex(8).upper()
        sent = PeerMessage(message_id, contact, jid, message, int(time.time()), push_name, kind, time.monotonic(),
                           node_type=node_type, media_type=media_type, edit=edit)
        node = self.message_node(sent, kind, data)
        self.remember(sent, node)
        conn.send(node)
        return message_id

    def remember(self, sent: PeerMessage, node: Node) -> None:
        self.nodes[sent.id] = node
        self.recent[sent.id] = sent
        while len(self.recent) > RECENT_MESSAGES:
            self.recent.popitem(last=False)

    @staticmethod
    def message_node(sent: PeerMessage, kind: str, data: bytes, retry_count: int | None = None) -> Node:
        enc_attrs = {"v": "2", "type": kind}
        if sent.media_type:
            enc_attrs["mediatype"] = sent.media_type
        if retry_count is not None:
            enc_attrs["count"] = str(retry_count)  # retry.go: encrypted.Attrs["count"] = retryCount
        if sent.group is not None:
            from .groups import group_attrs

            return Node("message", group_attrs(sent), [Node("enc", enc_attrs, data)])
        attrs = {
            "from": JID.parse(sent.contact.jid), "sender_lid": JID.parse(sent.contact.lid), "id": sent.id,
            "t": str(sent.t), "type": sent.node_type, "notify": sent.push_name,
        }
        if sent.edit:
            attrs["edit"] = sent.edit
        return Node("message", attrs, [Node("enc", enc_attrs, data)])
