"""Snapshot text to the bytes of its tar stream, as a bounded stream: base64, then gzip.

Neither the text nor the decompressed bytes are ever held whole: a piece of text, a gzip window and
what the reader asked for at a time. The decompressed size is capped (MAX_UNCOMPRESSED_BYTES), so a
decompression bomb stops at the cap, and only NUL padding may follow the last gzip member.
"""

from __future__ import annotations

import base64
import binascii
import io
import zlib

from snapshot.format import MAX_COMMENT, MAX_UNCOMPRESSED_BYTES, InvalidSnapshot

# How much snapshot text is decoded at a time, and how much of the decoded gzip is kept for the header
# checks (gzip magic, a tar mistaken for gzip, the FCOMMENT manifest behind an FEXTRA/FNAME).
TEXT_PIECE = 1 << 16
HEAD_BYTES = 2 + 65535 + 4096 + MAX_COMMENT + 16


def _text_pieces(text):
    """The snapshot text as ASCII bytes, a piece at a time: from a str/bytes value or a stream."""
    if isinstance(text, (str, bytes, bytearray)):
        pieces = (text[i:i + TEXT_PIECE] for i in range(0, len(text), TEXT_PIECE))
    elif hasattr(text, "read"):
        pieces = iter(lambda: text.read(TEXT_PIECE), text.read(0))
    else:
        raise InvalidSnapshot("the snapshot must be text")
    for piece in pieces:
        if isinstance(piece, str):
            if not piece.isascii():
                raise InvalidSnapshot("the snapshot is not valid base64 (cut short, or mangled when copied?)")
            piece = piece.encode("ascii")
        elif not piece.isascii():
            raise InvalidSnapshot("the snapshot is not base64 text (non-ASCII bytes)")
        yield bytes(piece)


class Decoded:
    """Iterates over the base64-decoded bytes of the snapshot text; never holds more than a piece.
    Counts what went by (`encoded_chars`, `total`) and keeps the first bytes in `head`."""

    def __init__(self, text):
        self._pieces = _text_pieces(text)
        self.encoded_chars = 0
        self.total = 0
        self.head = b""
        self._chunks = self._decode()

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        chunk = next(self._chunks)
        self.total += len(chunk)
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[:HEAD_BYTES - len(self.head)]
        return chunk

    def _decode(self):
        carry, ended = b"", False
        for piece in self._pieces:
            compact = b"".join(piece.split())  # `base64` wraps at 76 columns; config vars gain whitespace
            if not compact:
                continue
            if ended:  # data after the padding that ended the text
                raise _bad_base64()
            self.encoded_chars += len(compact)
            data = carry + compact
            cut = len(data) - len(data) % 4  # decode whole quanta; the rest waits for the next piece
            data, carry = data[:cut], data[cut:]
            if not data:
                continue
            ended = data.endswith(b"=")
            try:
                yield base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise _bad_base64() from None
        if carry:
            raise _bad_base64()
        if not self.encoded_chars:
            raise InvalidSnapshot("the snapshot is empty")


def _bad_base64() -> InvalidSnapshot:
    return InvalidSnapshot("the snapshot is not valid base64 (cut short, or mangled when copied?)")


def gzip_chunks(decoded: Decoded):
    """The decoded bytes, after checking they start like gzip (and saying so when they are a tar)."""
    first = []
    size = 0
    for chunk in decoded:
        first.append(chunk)
        size += len(chunk)
        if size >= 262:
            break
    head = b"".join(first)
    if head[:2] != b"\x1f\x8b":
        if head[257:262] == b"ustar":
            raise InvalidSnapshot("the snapshot is an uncompressed tar; make it with `tar czf` (gzip)")
        raise InvalidSnapshot("the snapshot is not gzip data (expected base64 of a .tar.gz)")
    yield head
    yield from decoded


class GunzipReader(io.RawIOBase):
    """Streams the decompressed bytes of one or more gzip members with a hard size cap. Pulls the
    compressed input from an iterator, so neither side is ever held whole."""

    def __init__(self, chunks):
        self._chunks = iter(chunks)
        self._src = b""  # compressed bytes not given to the decompressor yet
        self._dec = zlib.decompressobj(31)
        self._pending = b""
        self.total = 0
        self._done = False

    def readable(self):
        return True

    def _next_chunk(self):
        return next(self._chunks, None)

    def _more(self, want: int) -> bytes:
        while not self._done:
            if self._dec.eof:
                rest = self._dec.unused_data + self._src
                self._src = b""
                while len(rest) < 2:
                    chunk = self._next_chunk()
                    if chunk is None:
                        break
                    rest += chunk
                if rest[:2] == b"\x1f\x8b":  # a further gzip member (e.g. `cat a.gz b.gz`)
                    self._dec = zlib.decompressobj(31)
                    self._src = rest
                    continue
                while rest is not None:  # only NUL padding may follow; checked a piece at a time
                    if rest.strip(b"\x00"):
                        raise InvalidSnapshot("unexpected data after the end of the gzip stream")
                    rest = self._next_chunk()
                self._done = True
                break
            if self._dec.unconsumed_tail:
                src = self._dec.unconsumed_tail
            else:
                if not self._src:
                    self._src = self._next_chunk() or b""
                    if not self._src:
                        raise InvalidSnapshot("the gzip stream is truncated (the snapshot was cut short)")
                src, self._src = self._src[:65536], self._src[65536:]
            try:
                out = self._dec.decompress(src, max(want, 65536))
            except zlib.error as exc:
                raise InvalidSnapshot(f"corrupt gzip data ({exc})") from None
            if out:
                self.total += len(out)
                if self.total > MAX_UNCOMPRESSED_BYTES:
                    raise InvalidSnapshot(
                        f"snapshot expands beyond {MAX_UNCOMPRESSED_BYTES // 2**20} MiB "
                        "(a decompression bomb, or not a session)"
                    )
                return out
        return b""

    def readinto(self, buffer) -> int:
        want = len(buffer)
        if not self._pending:
            self._pending = self._more(want)
        n = min(want, len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def drain(self):
        """Read to the end so the gzip CRC and length are checked and truncation is noticed."""
        while self._more(65536):
            pass
