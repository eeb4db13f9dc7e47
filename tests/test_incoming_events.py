"""events.incoming_event and events.call_data on neonize's own event protos, shaped as whatsmeow
delivers them (types/events UnwrapRaw for edits, call.go for offers): which event a peer's message
becomes, and what is never forwarded."""

from __future__ import annotations

from neonize.proto.Neonize_pb2 import JID, CallOffer, Message as MessageEv, Node
from neonize.proto.waCommon.WACommon_pb2 import MessageKey
from neonize.proto.waE2E.WAWebProtobufsE2E_pb2 import (
    ExtendedTextMessage,
    Message,
    ProtocolMessage,
    ReactionMessage,
    SenderKeyDistributionMessage,
)

import events

PEER = JID(User="4915112345678", Server="s.whatsapp.net")


def event(message: Message, *, from_me: bool = False, message_id: str = "3EB0AA", is_edit: bool = False) -> MessageEv:
    ev = MessageEv(Message=message, IsEdit=is_edit)
    ev.Info.ID = message_id
    ev.Info.Timestamp = 1764112744
    ev.Info.MessageSource.Sender.CopyFrom(PEER)
    ev.Info.MessageSource.Chat.CopyFrom(PEER)
    ev.Info.MessageSource.IsFromMe = from_me
    return ev


def test_a_reaction_and_its_removal():
    key = MessageKey(remoteJID="15550001111@s.whatsapp.net", fromMe=False, ID="3EB0BOT")
    name, data = events.incoming_event(event(Message(reactionMessage=ReactionMessage(key=key, text="❤️"))))
    assert name == "reaction" and data["messageId"] == "3EB0BOT" and data["emoji"] == "❤️" and not data["removed"]
    name, data = events.incoming_event(event(Message(reactionMessage=ReactionMessage(key=key, text=""))))
    assert data["removed"] is True


def test_an_edit_names_the_edited_message_and_its_new_text():
    protocol = ProtocolMessage(key=MessageKey(ID="3EB0OLD", fromMe=True), type=ProtocolMessage.MESSAGE_EDIT,
                               editedMessage=Message(extendedTextMessage=ExtendedTextMessage(text="at 6")))
    name, data = events.incoming_event(event(Message(protocolMessage=protocol), message_id="3EB0NEW", is_edit=True))
    assert (name, data["id"], data["editId"], data["text"]) == ("edit", "3EB0OLD", "3EB0NEW", "at 6")


def test_a_delete_for_everyone():
    protocol = ProtocolMessage(key=MessageKey(ID="3EB0OLD", fromMe=True), type=ProtocolMessage.REVOKE)
    name, data = events.incoming_event(event(Message(protocolMessage=protocol)))
    assert (name, data["id"], data["from"]) == ("delete", "3EB0OLD", "4915112345678@s.whatsapp.net")


def test_what_is_never_forwarded():
    settings = ProtocolMessage(type=ProtocolMessage.EPHEMERAL_SETTING, ephemeralExpiration=86400)
    assert events.incoming_event(event(Message(protocolMessage=settings))) is None
    assert events.incoming_event(event(Message(conversation="mine"), from_me=True)) is None
    assert events.message_payload(event(Message(protocolMessage=settings))) is None
    # A group member's first message may come as a part holding only its sender key (whatsmeow
    # dispatches it too): no empty `message` event for it; the text part that follows is one.
    key_only = Message(senderKeyDistributionMessage=SenderKeyDistributionMessage(
        groupID="120363000000000001@g.us", axolotlSenderKeyDistributionMessage=b"\x33key"))
    assert events.incoming_event(event(key_only)) is None
    with_text = Message(conversation="hi group")
    with_text.senderKeyDistributionMessage.CopyFrom(key_only.senderKeyDistributionMessage)
    assert events.incoming_event(event(with_text))[0] == "message"


def test_a_plain_message_is_still_a_message_with_its_old_fields():
    payload = events.message_payload(event(Message(conversation="hello")))
    assert payload["event"] == "message" and payload["text"] == "hello" and payload["data"]["media"] is None
    assert payload["time"] == 1764112744
    in_ms = event(Message(conversation="hello"))
    in_ms.Info.Timestamp = 1764112744123  # what neonize hands over for a live message
    assert events.message_payload(in_ms)["time"] == 1764112744
    assert payload["id"] == payload["data"]["id"] == "3EB0AA"


def test_a_call_names_the_caller_by_phone_number_when_whatsapp_gave_both():
    offer = CallOffer(data=Node(Tag="offer", Nodes=[Node(Tag="audio"), Node(Tag="video")]))
    offer.basicCallMeta.callID = "CALL1"
    offer.basicCallMeta.timestamp = 1764112900000  # milliseconds
    offer.basicCallMeta.callCreator.CopyFrom(JID(User="84915112345678", Server="lid"))
    offer.basicCallMeta.callCreatorAlt.CopyFrom(PEER)
    assert events.call_data(offer) == {"id": "CALL1", "from": "4915112345678@s.whatsapp.net", "time": 1764112900,
                                       "video": True}
