"""Text from outside (a snapshot, a request, an upstream answer) made safe to print or log."""

from __future__ import annotations


def printable(value: object, limit: int | None = None) -> str:
    """`value` as one line with control characters escaped (`\\x1b`, `\\n`), cut to `limit` characters
    with an ellipsis: a JID, push name or error text can never forge a log line or drive a terminal."""
    text = "" if value is None else str(value)
    cut = limit is not None and len(text) > limit
    if cut:
        text = text[:limit]
    # repr() spells what it escapes the usual way: ESC -> \x1b, newline -> \n, U+202E -> \u202e.
    # Letters of any script stay as they are.
    escaped = text if text.isprintable() else "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return escaped + ("…" if cut else "")


def proto_text(value: object) -> str:
    """A string field of a neonize proto as text. neonize's protos are proto2, which does not check
    UTF-8: protobuf's upb runtime hands back `bytes` for a field that is not valid UTF-8 (a push name
    or a message text a client made up). Those are decoded with U+FFFD for what is not UTF-8."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return "" if value is None else str(value)
