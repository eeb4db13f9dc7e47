"""WhatsApp's binary XML: the node format carried inside every Noise frame after the handshake.

Written from the format whatsmeow reads and writes (binary/encoder.go, decoder.go, unpack.go):
a node is a list [tag, key, value, ..., content?]; strings are shortened through the token
dictionaries, packed as nibbles/hex when they can be, else written raw; JIDs have their own tags.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Union

from .tokens import DOUBLE_BYTE_TOKENS, SINGLE_BYTE_TOKENS

LIST_EMPTY = 0
DICTIONARY_0 = 236
INTEROP_JID = 245
FB_JID = 246
AD_JID = 247
LIST_8 = 248
LIST_16 = 249
JID_PAIR = 250
HEX_8 = 251
BINARY_8 = 252
BINARY_20 = 253
BINARY_32 = 254
NIBBLE_8 = 255
PACKED_MAX = 127

_SINGLE_INDEX = {tok: i for i, tok in enumerate(SINGLE_BYTE_TOKENS) if tok}
_DOUBLE_INDEX = {
    tok: (d, i) for d, toks in enumerate(DOUBLE_BYTE_TOKENS) for i, tok in enumerate(toks)
}

# Domain types of AD-JIDs (types/jid.go): the byte after the AD_JID tag picks the server.
_DOMAIN_TO_SERVER = {1: "lid", 128: "hosted", 129: "hosted.lid"}
_SERVER_TO_DOMAIN = {"s.whatsapp.net": 0, "lid": 1, "hosted": 128, "hosted.lid": 129}


class BinXMLError(ValueError):
    """A frame that is not valid binary XML."""


@dataclass(frozen=True)
class JID:
    user: str
    server: str
    device: int = 0
    agent: int = 0

    @classmethod
    def parse(cls, text: str) -> "JID":
        user, _, server = text.rpartition("@")
        if not _:
            return cls("", text)
        device = 0
        if ":" in user:
            user, dev = user.split(":", 1)
            device = int(dev)
        agent = 0
        if "." in user and server in ("s.whatsapp.net",):
            user, ag = user.split(".", 1)
            agent = int(ag)
        return cls(user, server, device, agent)

    def to_non_ad(self) -> "JID":
        return JID(self.user, self.server)

    def __str__(self) -> str:
        if self.agent:
            return f"{self.user}.{self.agent}:{self.device}@{self.server}"
        if self.device:
            return f"{self.user}:{self.device}@{self.server}"
        return f"{self.user}@{self.server}" if self.user else self.server


SERVER_JID = JID("", "s.whatsapp.net")

Content = Union[None, bytes, str, list]


@dataclass
class Node:
    tag: str
    attrs: dict = field(default_factory=dict)
    content: Content = None

    def children(self) -> list["Node"]:
        return self.content if isinstance(self.content, list) else []

    def child(self, tag: str) -> "Node | None":
        for c in self.children():
            if c.tag == tag:
                return c
        return None

    def attr(self, key: str, default=None):
        value = self.attrs.get(key, default)
        return str(value) if isinstance(value, JID) else value

    def __repr__(self) -> str:  # compact, for assertion messages
        inner = ""
        if isinstance(self.content, list):
            inner = "".join(repr(c) for c in self.content[:4])
            if len(self.content) > 4:
                inner += f"<!-- {len(self.content) - 4} more -->"
        elif isinstance(self.content, (bytes, str)):
            inner = f"<{len(self.content)} bytes>"
        attrs = "".join(f' {k}="{v}"' for k, v in self.attrs.items())
        return f"<{self.tag}{attrs}>{inner}</{self.tag}>"


# ---------------------------------------------------------------- encoding


def marshal(node: Node) -> bytes:
    """A node as a frame payload: a flags byte (0 = not compressed) then the node."""
    out = bytearray([0])
    _write_node(out, node)
    return bytes(out)


def _write_node(out: bytearray, node: Node) -> None:
    attrs = [(k, v) for k, v in node.attrs.items() if v is not None and v != ""]
    _write_list_start(out, 1 + 2 * len(attrs) + (node.content is not None))
    _write_string(out, node.tag)
    for key, value in attrs:
        _write_string(out, key)
        _write_value(out, value)
    if node.content is not None:
        _write_value(out, node.content)


def _write_value(out: bytearray, value) -> None:
    if value is None:
        out.append(LIST_EMPTY)
    elif isinstance(value, JID):
        _write_jid(out, value)
    elif isinstance(value, bool):
        _write_string(out, "true" if value else "false")
    elif isinstance(value, int):
        _write_string(out, str(value))
    elif isinstance(value, str):
        _write_string(out, value)
    elif isinstance(value, (bytes, bytearray)):
        _write_bytes(out, bytes(value))
    elif isinstance(value, list):
        _write_list_start(out, len(value))
        for child in value:
            _write_node(out, child)
    else:
        raise BinXMLError(f"cannot encode {type(value).__name__}")


def _write_list_start(out: bytearray, size: int) -> None:
    if size == 0:
        out.append(LIST_EMPTY)
    elif size < 256:
        out += bytes([LIST_8, size])
    else:
        out += bytes([LIST_16]) + size.to_bytes(2, "big")


def _write_bytes(out: bytearray, data: bytes) -> None:
    n = len(data)
    if n < 256:
        out += bytes([BINARY_8, n])
    elif n < 1 << 20:
        out += bytes([BINARY_20, (n >> 16) & 0x0F, (n >> 8) & 0xFF, n & 0xFF])
    else:
        out += bytes([BINARY_32]) + n.to_bytes(4, "big")
    out += data


def _write_string(out: bytearray, text: str) -> None:
    if text in _SINGLE_INDEX:
        out.append(_SINGLE_INDEX[text])
    elif text in _DOUBLE_INDEX:
        dictionary, index = _DOUBLE_INDEX[text]
        out += bytes([DICTIONARY_0 + dictionary, index])
    elif _packable(text, "0123456789-."):
        _write_packed(out, text, NIBBLE_8)
    elif _packable(text, "0123456789ABCDEF"):
        _write_packed(out, text, HEX_8)
    else:
        _write_bytes(out, text.encode())


def _packable(text: str, alphabet: str) -> bool:
    return 0 < len(text) <= PACKED_MAX and all(c in alphabet for c in text)


def _write_packed(out: bytearray, text: str, kind: int) -> None:
    alphabet = "0123456789-." if kind == NIBBLE_8 else "0123456789ABCDEF"
    length = (len(text) + 1) // 2
    out += bytes([kind, length | (0x80 if len(text) % 2 else 0)])
    nibbles = [alphabet.index(c) for c in text] + ([15] if len(text) % 2 else [])
    out += bytes((nibbles[i] << 4) | nibbles[i + 1] for i in range(0, len(nibbles), 2))


def _write_jid(out: bytearray, jid: JID) -> None:
    if (jid.server in ("s.whatsapp.net", "lid") and jid.device > 0) or jid.server in (
        "hosted",
        "hosted.lid",
    ):
        domain = _SERVER_TO_DOMAIN.get(jid.server, jid.agent)
        if jid.server == "s.whatsapp.net":
            domain = jid.agent
        out += bytes([AD_JID, domain, jid.device])
        _write_string(out, jid.user)
    else:
        out.append(JID_PAIR)
        if jid.user:
            _write_string(out, jid.user)
        else:
            out.append(LIST_EMPTY)
        _write_string(out, jid.server)


# ---------------------------------------------------------------- decoding


def unmarshal(frame: bytes) -> Node:
    """A frame payload (flags byte first; bit 2 = zlib) back to a node."""
    if not frame:
        raise BinXMLError("empty frame")
    flags, data = frame[0], frame[1:]
    if flags & 2:
        data = zlib.decompress(data)
    reader = _Reader(data)
    node = reader.read_node()
    return node


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise BinXMLError("unexpected end of node")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def int_n(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def list_size(self, tag: int) -> int:
        if tag == LIST_EMPTY:
            return 0
        if tag == LIST_8:
            return self.byte()
        if tag == LIST_16:
            return self.int_n(2)
        raise BinXMLError(f"bad list tag {tag}")

    def read_node(self) -> Node:
        size = self.list_size(self.byte())
        tag = self.read(as_string=True)
        if size == 0 or not tag:
            raise BinXMLError("invalid node")
        attrs = {}
        for _ in range((size - 1) >> 1):
            key = self.read(as_string=True)
            attrs[key] = self.read(as_string=True)
        content = None
        if size % 2 == 0:
            content = self.read(as_string=False)
        return Node(tag, attrs, content)

    def read(self, as_string: bool):
        tag = self.byte()
        if tag == LIST_EMPTY:
            return None
        if tag in (LIST_8, LIST_16):
            return [self.read_node() for _ in range(self.list_size(tag))]
        if tag in (BINARY_8, BINARY_20, BINARY_32):
            if tag == BINARY_8:
                n = self.byte()
            elif tag == BINARY_20:
                n = self.int_n(3) & 0xFFFFF
            else:
                n = self.int_n(4)
            raw = self.take(n)
            return raw.decode("utf-8", "replace") if as_string else raw
        if DICTIONARY_0 <= tag <= DICTIONARY_0 + 3:
            return DOUBLE_BYTE_TOKENS[tag - DICTIONARY_0][self.byte()]
        if tag == JID_PAIR:
            user = self.read(True)
            server = self.read(True)
            return JID(user or "", server)
        if tag == AD_JID:
            domain = self.byte()
            device = self.byte()
            user = self.read(True)
            server = _DOMAIN_TO_SERVER.get(domain, "s.whatsapp.net")
            agent = 0 if domain in _DOMAIN_TO_SERVER else domain
            return JID(user, server, device, agent)
        if tag == FB_JID:
            user = self.read(True)
            device = self.int_n(2)
            return JID(user, self.read(True), device)
        if tag == INTEROP_JID:
            user = self.read(True)
            device = self.int_n(2)
            self.int_n(2)
            return JID(user, self.read(True), device)
        if tag in (NIBBLE_8, HEX_8):
            return self.read_packed(tag)
        if 1 <= tag < len(SINGLE_BYTE_TOKENS):
            return SINGLE_BYTE_TOKENS[tag]
        raise BinXMLError(f"invalid token {tag}")

    def read_packed(self, tag: int) -> str:
        start = self.byte()
        alphabet = "0123456789-.\0\0\0\0" if tag == NIBBLE_8 else "0123456789ABCDEF"
        chars = []
        for b in self.take(start & 0x7F):
            chars.append(alphabet[b >> 4])
            chars.append(alphabet[b & 0x0F])
        if start >> 7:
            chars.pop()
        return "".join(chars)
