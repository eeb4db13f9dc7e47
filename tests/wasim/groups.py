"""Groups on the simulated server: metadata, members' messages to the device, the device's sends.

- Metadata: `<iq xmlns="w:g2" type="get" to="<id>@g.us"><query request="interactive"/>` answered with
  `<group id subject creation creator s_t s_o size><participant jid lid [type]/>...` (whatsmeow group.go
  `getGroupInfo`/`parseGroupNode`/`parseParticipant`; PN addressing, each participant's LID beside it).
  The members' device lists come from the usync devices query the server already answers (user.go
  `GetUserDevices`), listing each member's linked devices (`add_devices`).
- A member's message (message.go `decryptMessages`, `handleSenderKeyDistributionMessage`,
  `decryptGroupMsg`): `<message from="<group>" participant="<member>" participant_lid>` with, the
  first time the member writes to that device, an `enc` pkmsg/msg carrying only its
  SenderKeyDistributionMessage (send.go `sendGroup`: `skdPlaintext`), then the `skmsg`.
- The device's send (send.go `sendGroup`/`prepareMessageNode`): its SKDM to every member device in a
  pkmsg/msg under `<participants>`, then one `skmsg`; every member device reads it (`group_reads`).
- A retry receipt for a group message (retry.go `handleRetryReceipt`, `receipt.IsGroup`): the member
  re-sends the content with its SKDM attached, encrypted to the device alone (retry.py).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as E2EMessage

from .binxml import JID, Node
from .peers import PeerMessage
from .ratchet import DuplicateMessage, SignalError
from .senderkeys import ReceivedSenderKey, SenderKey
from .signalsession import pad_v2, unpad_v2


@dataclass
class Group:
    jid: str  # "<id>@g.us"
    subject: str
    members: list[str]  # phone numbers; the account's own number is always one of them
    creator: str
    created: int = field(default_factory=lambda: int(time.time()))


class GroupDirectory:
    def __init__(self, sim) -> None:
        self.sim = sim
        self.groups: dict[str, Group] = {}
        self.metadata_queries: list[str] = []  # group JIDs the client asked about

    # -------------------------------------------------------- set-up

    def create(self, subject: str, members: list[str], devices: dict[str, list[int]] | None = None) -> str:
        """A group of these phone numbers (and the account); `devices`: extra device ids per member."""
        own = self.sim.phone.phone_number
        numbers = [m.split("@")[0] for m in members]
        group = Group(f"120363{secrets.randbelow(10**12):012d}@g.us", subject,
                      [own] + [n for n in numbers if n != own], creator=numbers[0] if numbers else own)
        for number, ids in (devices or {}).items():
            self.sim.add_peer_devices(number, ids)
        self.groups[group.jid] = group
        return group.jid

    def group(self, group_jid: str) -> Group:
        if group_jid not in self.groups:
            raise self.sim.error(f"no group {group_jid}; known: {sorted(self.groups)}")
        return self.groups[group_jid]

    def member_devices(self, group: Group) -> dict[str, object]:
        """Every device of every member but the account's own: device JID -> Contact."""
        found = {}
        for number in group.members:
            if number == self.sim.phone.phone_number:
                continue
            contact = self.sim.peer(number)
            found[f"{number}@s.whatsapp.net"] = contact
            for device_id, linked in sorted(contact.linked.items()):
                found[f"{number}:{device_id}@s.whatsapp.net"] = linked
        return found

    # -------------------------------------------------------- metadata

    def handle_iq(self, conn, node: Node) -> bool:
        """The w:g2 metadata query; False when the IQ is not one this module answers."""
        to = node.attrs.get("to")
        query = node.child("query")
        if not isinstance(to, JID) or to.server != "g.us" or query is None:
            return False
        self.metadata_queries.append(str(to))
        group = self.groups.get(str(to))
        reply = {"from": to, "type": "result", "id": node.attrs.get("id")}
        if group is None:
            conn.send(Node("iq", {**reply, "type": "error"}, [Node("error", {"code": "404", "text": "item-not-found"})]))
            return True
        participants = []
        for number in group.members:
            contact = self.sim.peer(number)
            attrs = {"jid": JID.parse(contact.jid), "lid": JID.parse(contact.lid)}
            if number == group.creator:
                attrs["type"] = "superadmin"
            participants.append(Node("participant", attrs))
        creator = JID.parse(self.sim.peer(group.creator).jid)
        conn.send(Node("iq", reply, [Node("group", {
            "id": group.jid.split("@")[0], "subject": group.subject, "s_t": str(group.created),
            "s_o": creator, "creation": str(group.created), "creator": creator,
            "size": str(len(group.members)),
        }, participants)]))
        return True

    # -------------------------------------------------------- a member writes

    def deliver(self, jid: str, group_jid: str, member: str, text: str, push_name: str) -> str:
        group = self.group(group_jid)
        number = member.split("@")[0]
        if number not in group.members:
            raise self.sim.error(f"{number} is not a member of {group_jid}")
        device = self.sim.device_record(jid)
        conn = self.sim.live_connection(jid)
        contact = self.sim.peer(number)
        sender_key = contact.sender_keys.setdefault(group.jid, SenderKey())
        children = []
        if jid not in contact.distributed.setdefault(group.jid, set()):
            if contact.session(jid) is None:
                contact.start_session(jid, self.sim.peers.fetch_bundle(device, contact))
            skdm = E2EMessage()
            skdm.senderKeyDistributionMessage.groupID = group.jid
            skdm.senderKeyDistributionMessage.axolotlSenderKeyDistributionMessage = sender_key.distribution()
            kind, data = contact.encrypt_for(jid, pad_v2(skdm.SerializeToString()))
            children.append(Node("enc", {"v": "2", "type": kind}, data))
            contact.distributed[group.jid].add(jid)
        message = E2EMessage(conversation=text).SerializeToString()
        children.append(Node("enc", {"v": "2", "type": "skmsg"}, sender_key.encrypt(pad_v2(message))))
        sent = PeerMessage("3EB0" + secrets.token_hex(8).upper(), contact, jid, message, int(time.time()),
                           push_name, children[0].attrs["type"], time.monotonic(), group=group.jid)
        node = Node("message", group_attrs(sent), children)
        self.sim.peers.remember(sent, node)
        conn.send(node)
        return sent.id

    # -------------------------------------------------------- the device writes

    def read_sent(self, conn, node: Node, dropped: dict) -> tuple[str | None, E2EMessage | None, dict[str, str | None]]:
        """Every member device's reading of the device's group message: (text, message, reads); a
        device whose libsignal would drop a part as a duplicate is named in `dropped`."""
        group = self.groups.get(str(node.attrs.get("to")))
        if group is None:
            self.sim.errors.append(f"a message to an unknown group {node.attrs.get('to')}")
            return None, None, {}
        sender = str(conn.jid)
        participants = node.child("participants")
        for to in participants.children() if participants is not None else []:
            target = to.attrs.get("jid")
            if not isinstance(target, JID) or self.sim.is_own_user(target.user):
                continue
            contact = self.sim.device_contact(target.user, target.device)
            for enc in to.children():
                if enc.tag != "enc":
                    continue
                try:
                    message = E2EMessage()
                    message.ParseFromString(unpad_v2(contact.decrypt(enc.attrs.get("type"), enc.content, sender)))
                except DuplicateMessage as exc:
                    dropped[str(target)] = str(exc)
                    continue
                except (SignalError, ValueError) as exc:
                    self.sim.errors.append(f"{target} could not read the SKDM of {node.attrs.get('id')}: {exc}")
                    continue
                skdm = message.senderKeyDistributionMessage
                if skdm.axolotlSenderKeyDistributionMessage:
                    contact.group_keys[(group.jid, sender)] = ReceivedSenderKey.from_distribution(
                        skdm.axolotlSenderKeyDistributionMessage)
        skmsg = next((e for e in node.children() if e.tag == "enc" and e.attrs.get("type") == "skmsg"), None)
        reads: dict[str, str | None] = {}
        text = message = None
        for device_jid, contact in self.member_devices(group).items():
            key = contact.group_keys.get((group.jid, sender))
            if skmsg is None or key is None:
                reads[device_jid] = None
                continue
            try:
                message = E2EMessage()
                message.ParseFromString(unpad_v2(key.decrypt(skmsg.content)))
            except DuplicateMessage as exc:
                dropped[device_jid] = str(exc)
                reads[device_jid] = None
                continue
            except (SignalError, ValueError) as exc:
                self.sim.errors.append(f"{device_jid} could not read group message {node.attrs.get('id')}: {exc}")
                reads[device_jid] = None
                continue
            text = reads[device_jid] = message.conversation or message.extendedTextMessage.text
        return text, message, reads


def group_attrs(sent: PeerMessage) -> dict:
    """A member's group message as the server delivers it (message.go `parseMessageSource`)."""
    return {
        "from": JID.parse(sent.group), "participant": JID.parse(sent.contact.jid),
        "participant_lid": JID.parse(sent.contact.lid), "id": sent.id, "t": str(sent.t), "type": "text",
        "notify": sent.push_name,
    }


def with_sender_key(sent: PeerMessage) -> bytes:
    """retry.go for a group: the message again, with the member's SKDM attached (`builder.Create`)."""
    message = E2EMessage()
    message.ParseFromString(sent.message)
    message.senderKeyDistributionMessage.groupID = sent.group
    message.senderKeyDistributionMessage.axolotlSenderKeyDistributionMessage = (
        sent.contact.sender_keys[sent.group].distribution())
    return message.SerializeToString()
