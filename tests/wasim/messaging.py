"""The simulator's contacts and their messages with the client (a part of WhatsAppSimulator).

1:1 messages (message.go, send.go, receipt.go) through the Signal sessions in signalsession.py, the
peers' own messages and retries (peers.py, retry.py), groups (groups.py), the usync and key-fetch
queries a sender makes (user.go `GetUserDevices`/`usync`, prekeys.go `fetchPreKeys`).
"""

from __future__ import annotations

import time

from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import Message as E2EMessage

from .binxml import JID, SERVER_JID, Node
from .onwhatsapp import contact_users
from .records import DeviceRecord, SentMessage, SimulatorError
from .signalsession import Contact, DuplicateMessage, SignalError, unpad_v2

_Connection = object  # server._Connection (a live client stream); named for the annotations


class Messaging:
    """Mixed into WhatsAppSimulator: everything about contacts, messages, groups and their keys."""

    def notify_prekey_count(self, device: DeviceRecord) -> None:
        """WhatsApp's `encrypt` notification with the count of one-time keys left (whatsmeow
        notification.go `handleEncryptNotification` uploads a batch when it is under 5)."""
        for conn in self._live(str(device.jid)):
            try:
                conn.send(Node("notification", {"from": SERVER_JID, "type": "encrypt", "id": self._iq_id(),
                                                "t": str(int(time.time()))}, [
                    Node("count", {"value": str(len(device.pool))})]))
            except OSError:
                pass

    def peer(self, number: str) -> Contact:
        """The simulated contact (its device 0) with this phone number or LID user."""
        return self._contact(number.split("@")[0])

    def is_own_user(self, user: str) -> bool:
        return user in (self.phone.phone_number, self.phone.lid_user)

    def add_peer_devices(self, number: str, device_ids: list[int]) -> None:
        """Companion devices of a contact: listed by usync, each with its own keys and sessions."""
        contact = self.peer(number)
        for device_id in device_ids:
            if device_id != 0 and device_id not in contact.linked:
                contact.linked[device_id] = Contact(contact.jid, contact.lid, push_name=contact.push_name)

    def device_contact(self, user: str, device: int) -> Contact:
        contact = self.peer(user)
        if device == 0:
            return contact
        if device not in contact.linked:
            raise SimulatorError(f"{user} has no device {device}")
        return contact.linked[device]

    def create_group(self, subject: str, members: list[str], devices: dict[str, list[int]] | None = None) -> str:
        """A group of these contacts and the account (groups.py); returns its JID (…@g.us)."""
        return self.groups.create(subject, members, devices)

    def deliver_group_text(self, jid: str, group_jid: str, member: str, text: str,
                           push_name: str = "Sim Member") -> str:
        """A member's text in a group, to device `jid`: its SKDM the first time, then the skmsg."""
        with self.signal_lock:
            return self.groups.deliver(jid, group_jid, member, text, push_name)

    def received_node_children(self, message_id: str) -> list[Node]:
        """The enc children of a message the simulator delivered (by id), as sent on the wire."""
        return [c for c in self.peers.nodes.get(message_id, Node("message")).children() if c.tag == "enc"]

    def set_peer(self, sender: str, answers_retries: bool = True) -> None:
        """answers_retries=False: this contact's client ignores retry receipts (an old client)."""
        self._contact(sender.split("@")[0]).answers_retries = answers_retries

    def _contact(self, user: str) -> Contact:
        """The contact with this phone number or LID user, created on first mention."""
        with self._cond:
            for contact in self.contacts.values():
                if user in (contact.jid.split("@")[0], contact.lid.split("@")[0]):
                    return contact
            if user == self.phone.lid_user:
                user = self.phone.phone_number
            if user == self.phone.phone_number:
                contact = Contact(f"{user}@s.whatsapp.net", f"{self.phone.lid_user}@lid",
                                  identity=self.phone.identity)
            else:
                contact = Contact(f"{user}@s.whatsapp.net", f"8{user}@lid")
            self.contacts[user] = contact
            return contact

    def deliver_text(self, jid: str, sender: str, text: str, push_name: str | bytes = "Sim Contact",
                     session: str = "fresh") -> str:
        """An incoming 1:1 text from `sender` (a phone number or JID) to device `jid`; returns its id.
        session="fresh": a new Signal session (a pkmsg) every time; "keep": on the session the peer
        already has with the device (a msg once acknowledged), a new one only when it has none."""
        return self.deliver_message(jid, sender, E2EMessage(conversation=text), push_name=push_name, session=session)

    def deliver_message(self, jid: str, sender: str, message: E2EMessage, *, push_name: str | bytes = "Sim Contact",
                        node_type: str = "text", media_type: str | None = None, edit: str | None = None,
                        message_id: str | None = None, session: str = "fresh") -> str:
        """Any incoming 1:1 message (a waE2E.Message) from `sender` to device `jid`; returns its id.
        `node_type`, the enc node's `mediatype` and the `edit` attribute as WhatsApp sets them (whatsmeow
        send.go getTypeFromMessage / getMediaTypeFromMessage / getEditAttribute; message.go
        parseMessageInfo reads them back). peer_events.py builds the messages."""
        contact = self._contact(sender.split("@")[0])
        self._device(jid)
        with self.signal_lock:
            return self.peers.deliver(jid, contact, message, push_name, session, node_type=node_type,
                                      media_type=media_type, edit=edit, message_id=message_id)

    def _handle_message(self, conn: _Connection, node: Node) -> None:
        recipient = node.attrs.get("to")
        reads, dropped = {}, {}
        with self.signal_lock:
            if isinstance(recipient, JID) and recipient.server == "g.us":
                text, message, reads = self.groups.read_sent(conn, node, dropped)
            else:
                text, message = self._read_direct(conn, node, dropped)
        with self._cond:
            pn = node.attrs.get("peer_recipient_pn")
            self.sent_messages.append(SentMessage(
                to=str(recipient), recipient_pn=str(pn) if pn else None, id=node.attrs.get("id"),
                type=node.attrs.get("type"), text=text, node=node, message=message, sim=self,
                group_reads=reads, dropped=dropped))
        conn.send(Node("ack", {"class": "message", "id": node.attrs.get("id"), "from": recipient,
                               "t": str(int(time.time()))}))

    def _read_direct(self, conn: _Connection, node: Node, dropped: dict) -> tuple[str | None, E2EMessage | None]:
        targets = []  # (device jid, enc node)
        participants = node.child("participants")
        for to in participants.children() if participants is not None else []:
            for enc in to.children():
                if enc.tag == "enc":
                    targets.append((to.attrs.get("jid"), enc))
        for enc in node.children():
            if enc.tag == "enc":
                targets.append((node.attrs.get("to"), enc))
        text = None
        message = None
        for device_jid, enc in targets:
            if not isinstance(device_jid, JID) or self.is_own_user(device_jid.user):
                continue  # the copies for the account's own phone and companion devices
            if device_jid.device != 0 and device_jid.device not in self.peer(device_jid.user).linked:
                continue
            contact = self.device_contact(device_jid.user, device_jid.device)
            try:
                decrypted = E2EMessage()
                decrypted.ParseFromString(unpad_v2(contact.decrypt(enc.attrs.get("type"), enc.content,
                                                                   str(conn.jid))))
                if device_jid.device == 0:
                    text = decrypted.conversation or decrypted.extendedTextMessage.text
                    message = decrypted
            except DuplicateMessage as exc:
                dropped[str(device_jid)] = str(exc)
            except (SignalError, ValueError) as exc:
                self.errors.append(f"could not decrypt message {node.attrs.get('id')} for {device_jid}: {exc}")
        return text, message

    def send_receipt(self, jid: str, message_id: str, kind: str = "delivered") -> None:
        """The contact's phone acknowledges a message device `jid` sent (whatsmeow receipt.go
        `handleReceipt`/`parseReceipt`): from the address the message went to, type "" (delivered),
        "read" or "played"."""
        sent = next((m for m in self.sent_messages if m.id == message_id), None)
        if sent is None:
            raise SimulatorError(f"no sent message {message_id!r}")
        types = {"delivered": None, "read": "read", "played": "played"}
        if kind not in types:
            raise SimulatorError(f"receipt kind must be one of {sorted(types)}")
        attrs = {"from": JID.parse(sent.to), "id": message_id, "t": str(int(time.time()))}
        if types[kind]:
            attrs["type"] = types[kind]
        self._live(jid, required=True)[-1].send(Node("receipt", attrs))

    def _handle_usync(self, conn: _Connection, node: Node) -> None:
        usync = node.child("usync")
        query = {q.tag for q in usync.child("query").children()}
        if "contact" in query:  # "is this number on WhatsApp" (onwhatsapp.py)
            users = contact_users(usync, lambda n: (self.peer(n).jid, self.peer(n).lid), self.not_on_whatsapp)
            self._result(conn, node, [Node("usync", dict(usync.attrs), [Node("list", {}, users)])])
            return
        users = []
        for user in usync.child("list").children():
            jid = user.attrs.get("jid")
            if not isinstance(jid, JID):
                continue
            contact = self._contact(jid.user)
            is_own = contact.identity is self.phone.identity
            children = []
            if "devices" in query:
                ids = [0] + sorted(contact.linked)
                if is_own:
                    ids += sorted(d.jid.device for d in self.devices.values()
                                  if not d.removed and d.signed_prekey is not None)
                children.append(Node("devices", {}, [Node("device-list", {}, [
                    Node("device", {"id": str(i)}) for i in ids])]))
            if "lid" in query:
                children.append(Node("lid", {"val": JID.parse(contact.lid)}))
            users.append(Node("user", {"jid": jid}, children))
        self._result(conn, node, [Node("usync", dict(usync.attrs), [Node("list", {}, users)])])

    def _handle_key_fetch(self, conn: _Connection, node: Node) -> None:
        users = []
        for user in node.child("key").children():
            jid = user.attrs.get("jid")
            if not isinstance(jid, JID):
                continue
            if jid.device == 0:
                material = self._contact(jid.user).bundle_nodes_material()
            elif not self.is_own_user(jid.user) and jid.device in self.peer(jid.user).linked:
                material = self.peer(jid.user).linked[jid.device].bundle_nodes_material()
            else:
                device = next((d for d in self.devices.values()
                               if d.jid.device == jid.device and d.signed_prekey is not None), None)
                if device is None:
                    users.append(Node("user", {"jid": jid}, [Node("error", {"code": "404", "text": "item-not-found"})]))
                    continue
                prekey_id, prekey_pub, went_low = device.pool.take(str(conn.jid))
                if went_low:
                    self.notify_prekey_count(device)
                material = {
                    "registration_id": device.registration_id,
                    "identity": device.identity_pub,
                    "skey": device.signed_prekey,
                    "key": (prekey_id, prekey_pub) if prekey_id is not None else None,
                }
            children = [
                Node("registration", {}, material["registration_id"].to_bytes(4, "big")),
                Node("type", {}, b"\x05"),
                Node("identity", {}, material["identity"]),
                Node("skey", {}, [
                    Node("id", {}, material["skey"][0].to_bytes(3, "big")),
                    Node("value", {}, material["skey"][1]),
                    Node("signature", {}, material["skey"][2]),
                ]),
            ]
            if material["key"] is not None:
                children.append(Node("key", {}, [
                    Node("id", {}, material["key"][0].to_bytes(3, "big")),
                    Node("value", {}, material["key"][1]),
                ]))
            users.append(Node("user", {"jid": jid}, children))
        self._result(conn, node, [Node("list", {}, users)])
