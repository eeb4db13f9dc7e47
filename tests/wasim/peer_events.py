"""What a peer (a customer's phone) sends the linked device besides text: media messages, reactions,
edits and deletes of its own messages, and call offers; and what the client sends back to reject a call.

Each message is the waE2E.Message a WhatsApp phone builds, delivered through the simulator's
`deliver_message` with the node attributes WhatsApp sets (whatsmeow send.go, the sending side of the
same protocol: `getTypeFromMessage` "media"/"reaction"/"text", `getMediaTypeFromMessage` image, ptt,
audio, video, gif, document, sticker on the enc node, `getEditAttribute` "1" for an edit and "7" for a
delete by its sender or a reaction taken back; `BuildReaction`, `BuildEdit`, `BuildRevoke` for the
content). The client reads them in message.go `parseMessageInfo` and types/events `UnwrapRaw`.

Calls follow call.go `handleCallEvent`: `<call from t platform version><offer call-id call-creator>`
with the offer's media children; the client's `RejectCall` answers `<call id from to><reject call-id
call-creator count="0"/></call>` on the same connection.
"""

from __future__ import annotations

import secrets
import time

from neonize.proto.waCommon.WACommon_pb2 import MessageKey
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import (
    AudioMessage,
    DocumentMessage,
    FutureProofMessage,
    ImageMessage,
    Message,
    ProtocolMessage,
    ReactionMessage,
    StickerMessage,
    VideoMessage,
)

from .binxml import JID, Node

# kind -> (message field, proto class, the enc node's mediatype)
KINDS = {
    "image": ("imageMessage", ImageMessage, "image"),
    "video": ("videoMessage", VideoMessage, "video"),
    "audio": ("audioMessage", AudioMessage, "audio"),
    "voice_note": ("audioMessage", AudioMessage, "ptt"),
    "document": ("documentMessage", DocumentMessage, "document"),
    "sticker": ("stickerMessage", StickerMessage, "sticker"),
}


def send_media(sim, jid: str, sender: str, kind: str, source, *, mimetype: str, caption: str | None = None,
               file_name: str | None = None, seconds: int | None = None, width: int | None = None,
               height: int | None = None, push_name: str = "Sim Contact") -> tuple[str, object]:
    """The peer uploads `source` (bytes or a file path) and sends it as a `kind` message; returns
    (message id, the PeerUpload)."""
    field, proto, media_type = KINDS[kind]
    upload = sim.peer_media.upload(field, source)
    part = proto(URL=upload.url, directPath=upload.direct_path, mediaKey=upload.media_key,
                 fileSHA256=upload.file_sha256, fileEncSHA256=upload.file_enc_sha256,
                 fileLength=upload.file_length, mimetype=mimetype, mediaKeyTimestamp=int(time.time()))
    if caption is not None:
        part.caption = caption
    if file_name is not None:
        part.fileName = file_name
    if seconds is not None:
        part.seconds = seconds
    if kind == "voice_note":
        part.PTT = True
    if width is not None:
        part.width, part.height = width, height
    message = Message(**{field: part})
    message_id = sim.deliver_message(jid, sender, message, push_name=push_name, node_type="media",
                                     media_type=media_type)
    return message_id, upload


def _key(sim, message_id: str, from_me: bool) -> MessageKey:
    # The key names the chat as the sender's phone sees it: the chat with the linked account.
    return MessageKey(remoteJID=f"{sim.phone.phone_number}@s.whatsapp.net", fromMe=from_me, ID=message_id)


def react(sim, jid: str, sender: str, message_id: str, emoji: str, *, from_me: bool = False) -> str:
    """The peer reacts to `message_id` in its chat with the account: a message the account sent
    (`from_me` False, as the peer's phone keys it) or one of the peer's own (`from_me` True). An
    empty emoji takes the reaction back."""
    reaction = ReactionMessage(key=_key(sim, message_id, from_me), text=emoji,
                               senderTimestampMS=int(time.time() * 1000))
    return sim.deliver_message(jid, sender, Message(reactionMessage=reaction), node_type="reaction",
                               edit="7" if emoji == "" else None)


def edit(sim, jid: str, sender: str, message_id: str, new_text: str) -> str:
    """The peer edits its own message `message_id` (BuildEdit: an EditedMessage wrapping a
    MESSAGE_EDIT protocol message)."""
    protocol = ProtocolMessage(key=_key(sim, message_id, True), type=ProtocolMessage.MESSAGE_EDIT,
                               editedMessage=Message(conversation=new_text),
                               timestampMS=int(time.time() * 1000))
    message = Message(editedMessage=FutureProofMessage(message=Message(protocolMessage=protocol)))
    return sim.deliver_message(jid, sender, message, edit="1")


def revoke(sim, jid: str, sender: str, message_id: str) -> str:
    """The peer deletes its own message `message_id` for everyone (BuildRevoke)."""
    protocol = ProtocolMessage(key=_key(sim, message_id, True), type=ProtocolMessage.REVOKE)
    return sim.deliver_message(jid, sender, Message(protocolMessage=protocol), edit="7")


def offer_call(sim, jid: str, caller: str, *, video: bool = False) -> str:
    """The peer calls the account: a `<call><offer>` to device `jid`; returns the call id."""
    contact = sim._contact(caller.split("@")[0])
    call_id = secrets.token_hex(16).upper()
    media = [Node("audio", {"enc": "opus", "rate": "16000"}), Node("audio", {"enc": "opus", "rate": "8000"})]
    if video:
        media.append(Node("video", {"enc": "vp8", "dec": "vp8"}))
    node = Node("call", {"from": JID.parse(contact.jid), "id": secrets.token_hex(8).upper(),
                         "t": str(int(time.time())), "platform": "android", "version": "2.24.20.89",
                         "notify": "Sim Contact"}, [
        Node("offer", {"call-id": call_id, "call-creator": JID.parse(contact.jid)},
             media + [Node("net", {"medium": "3"}), Node("encopt", {"keygen": "2"})]),
    ])
    sim._live(jid, required=True)[-1].send(node)
    return call_id


def call_rejects(sim, call_id: str | None = None) -> list[Node]:
    """The `<reject>` nodes the client sent (RejectCall), optionally for one call id."""
    found = []
    for _conn, node in list(sim.received):
        if node.tag != "call":
            continue
        for child in node.children():
            if child.tag == "reject" and (call_id is None or child.attrs.get("call-id") == call_id):
                found.append(node)
    return found
