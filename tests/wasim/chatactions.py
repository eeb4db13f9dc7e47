"""What a client says about chats besides messages, as the server and the peer's phone see it.

- Read receipts the client sends (whatsmeow receipt.go `MarkRead`): `<receipt id type="read" to t
  [participant]>` naming the first message, `<list><item id/>...</list>` for the others; type
  "read-self" when the account's privacy setting hides read receipts.
- Chat states (presence.go `SendChatPresence`): `<chatstate to><composing [media="audio"]/></chatstate>`
  or `<paused/>`; and the account's own presence (presence.go `SendPresence`): `<presence type name>`.
- Reactions, edits and revokes are ordinary encrypted messages (send.go `BuildReaction`, `BuildEdit`,
  `BuildRevoke`, `getTypeFromMessage`, `getEditAttribute`); `peer_view` reads one the way the peer's
  phone applies it (message.go `parseMessageInfo` reads the `edit` attribute) and says what it does.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .binxml import Node

# types/message.go EditAttribute values.
EDIT_MESSAGE = "1"
SENDER_REVOKE = "7"
ADMIN_REVOKE = "8"


@dataclass
class ReadReceipt:
    """One `<receipt type="read">` from the client: the chat, the ids it marks, who sent them (groups)."""

    to: str
    ids: list[str]
    type: str
    participant: str | None
    timestamp: int
    node: Node = field(repr=False)


@dataclass
class ChatState:
    to: str
    state: str  # "composing" or "paused"
    media: str | None  # "audio" while recording a voice note
    node: Node = field(repr=False)


@dataclass
class PeerView:
    """What a sent message does on the peer's phone."""

    kind: str  # "message", "reaction", "edit", "revoke"
    target: str | None = None  # the message id a reaction, edit or revoke is about
    text: str | None = None  # the new text of an edit, the emoji of a reaction ("" removes it)
    from_me: bool | None = None  # the key's fromMe: whose message the target is


class ChatActionLog:
    """Receipts, chat states and presences the client sent; one lock, a condition to wait on."""

    def __init__(self, cond: threading.Condition) -> None:
        self._cond = cond
        self.read_receipts: list[ReadReceipt] = []
        self.other_receipts: list[Node] = []  # delivery, retry...: not the point of these tests
        self.chat_states: list[ChatState] = []
        self.presences: list[dict] = []  # {"type": "available", "name": ...}

    def handle(self, node: Node) -> bool:
        """Takes a node the client sent when it is one of these; False otherwise."""
        if node.tag == "receipt":
            self._receipt(node)
        elif node.tag == "chatstate":
            children = node.children()
            if len(children) != 1:  # presence.go handleChatState: exactly one child
                raise ValueError(f"chatstate with {len(children)} children: {node!r}")
            state = children[0]
            with self._cond:
                self.chat_states.append(ChatState(node.attr("to"), state.tag, state.attr("media"), node))
        elif node.tag == "presence" and node.attr("to") is None:
            with self._cond:
                self.presences.append({"type": node.attr("type"), "name": node.attr("name")})
        else:
            return False
        return True

    def _receipt(self, node: Node) -> None:
        kind = node.attr("type") or ""
        if kind not in ("read", "read-self"):
            with self._cond:
                self.other_receipts.append(node)
            return
        ids = [node.attr("id")]
        listed = node.child("list")
        if listed is not None:
            ids += [item.attr("id") for item in listed.children() if item.tag == "item"]
        with self._cond:
            self.read_receipts.append(ReadReceipt(
                to=node.attr("to"), ids=ids, type=kind, participant=node.attr("participant"),
                timestamp=int(node.attr("t") or 0), node=node,
            ))


def peer_view(node: Node, message) -> PeerView:
    """How the peer's phone applies a decrypted message: the `edit` attribute must agree with the
    content (whatsmeow sets it from the content, getEditAttribute), else the phone would treat an
    edit as a new message or ignore a revoke. Raises ValueError when they disagree."""
    edit = node.attr("edit") or ""
    if message.HasField("reactionMessage"):
        reaction = message.reactionMessage
        want = SENDER_REVOKE if reaction.text == "" else ""
        _agree(node, edit, want, "reaction")
        if node.attr("type") != "reaction":
            raise ValueError(f"a reaction must be sent as type=reaction (send.go getTypeFromMessage): {node!r}")
        return PeerView("reaction", reaction.key.ID, reaction.text, reaction.key.fromMe)
    inner = message.editedMessage.message if message.HasField("editedMessage") else message
    if inner.HasField("protocolMessage"):
        protocol = inner.protocolMessage
        kind = type(protocol).Type.Name(protocol.type)
        if kind == "MESSAGE_EDIT":
            _agree(node, edit, EDIT_MESSAGE, "edit")
            new = protocol.editedMessage
            return PeerView("edit", protocol.key.ID, new.conversation or new.extendedTextMessage.text,
                            protocol.key.fromMe)
        if kind == "REVOKE":
            _agree(node, edit, SENDER_REVOKE if protocol.key.fromMe else ADMIN_REVOKE, "revoke")
            return PeerView("revoke", protocol.key.ID, None, protocol.key.fromMe)
    _agree(node, edit, "", "message")
    return PeerView("message", None, message.conversation or message.extendedTextMessage.text or None)


def _agree(node: Node, edit: str, want: str, what: str) -> None:
    if edit != want:
        raise ValueError(f"{what} sent with edit={edit!r}, the peer expects {want!r}: {node!r}")
