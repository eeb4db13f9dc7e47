"""Our own check of every raw 512-byte tar header, before Python's `tarfile` parses it.

`tarfile` mishandles hostile headers before any check of ours could run on the members it returns:
a GNU sparse 1.0 map costs it gigabytes, a pax header of digits holds it for minutes (CVE-2024-6232:
a quadratic `hdrcharset` search, not fixed in Python 3.11.7), a few hundred long-name or pax headers in
a row recurse past the interpreter's limit, and a long name is read whole into memory. A session
directory needs none of that, so `CheckedTarStream` sits between the decompressed bytes and `tarfile`
and passes a header on only once it has checked it:

- its checksum holds (as `tarfile` computes it: unsigned or signed byte sum), its size is plain octal;
- its type is a regular file (`0`, NUL), a directory (`5`, or NUL with a name ending in `/`, which
  `tarfile` turns into one) without data, or a pax extended header (`x`) of at most MAX_PAX_BYTES
  whose records are well formed, followed by a file or directory header (never a second `x`) and
  without `GNU.sparse.*`, `size` or `hdrcharset` keys (the first is the sparse map; `size` would move
  the next header where this check does not look; the last is what the quadratic search looks for);
- anything else (GNU long names `L`/`K`, sparse `S`, global pax `g`, links, devices, FIFOs, unknown
  types) is an InvalidSnapshot naming the entry.

It keeps the stream's framing exactly as `tarfile` does (a header, then the file's data rounded up to
512 bytes; a pax header's records; an all-zero block ends the archive), so every block `tarfile` reads
as a header went through `check_header` first. Memory: one header and one pax block at a time.
"""

from __future__ import annotations

import io
import re
import struct

from snapshot.format import InvalidSnapshot
from textsafe import printable

BLOCK = 512
# A pax header a session directory could need (a long path, some times, an owner, a few extended
# attributes) fits in 4 KiB. The bound also keeps `tarfile`'s quadratic hdrcharset search (CVE-2024-6232)
# at a few milliseconds on 3.11.7.
MAX_PAX_BYTES = 4096

_REGULAR = (b"0", b"\0")
_DIRECTORY = b"5"
_EXTENDED = b"x"
_LINKS = (b"1", b"2")
_DEVICES = (b"3", b"4", b"6")
_REFUSED = {
    b"L": "a GNU long name (././@LongLink)",
    b"K": "a GNU long link name (././@LongLink)",
    b"S": "a GNU sparse file",
    b"g": "a global pax header",
    b"X": "a Solaris extended header",
    b"7": "a contiguous file",
}
# Keys a pax header may not carry (see the module docstring); GNU.sparse.* is refused by prefix.
_REFUSED_PAX_KEYS = ("size", "hdrcharset")
_PAX_RECORD = re.compile(rb"([1-9][0-9]{0,5}) ([^=\n\0]+)=")


def _octal(field: bytes, what: str, name: str) -> int:
    """A numeric header field as `tarfile` reads it (up to the first NUL, blanks stripped, octal), but
    plain octal digits only: base-256 and anything else `int()` would also take are refused."""
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if not all(48 <= c <= 55 for c in text):
        raise InvalidSnapshot(f"the tar header of {name} has an invalid {what} field")
    return int(text, 8)


def _name(header: bytes) -> str:
    """The entry's name for a message: the name field (and the ustar prefix), escaped and cut."""
    name = header[0:100].split(b"\0", 1)[0]
    prefix = header[345:500].split(b"\0", 1)[0] if header[257:262] == b"ustar" else b""
    whole = (prefix + b"/" + name) if prefix else name
    return "'" + printable(whole.decode("utf-8", "replace"), 100) + "'"


def _checksum_holds(header: bytes) -> bool:
    stored = header[148:156].split(b"\0", 1)[0].strip(b" ")
    if not stored or not all(48 <= c <= 55 for c in stored):
        return False
    value = int(stored, 8)
    unsigned = 256 + sum(struct.unpack_from("148B8x356B", header))
    signed = 256 + sum(struct.unpack_from("148b8x356b", header))
    return value in (unsigned, signed)


def check_header(header: bytes, after_extended: bool, offset: int = 0) -> tuple[str, int]:
    """("file" | "dir" | "pax", data bytes that follow) for a non-zero 512-byte header at `offset` of
    the tar stream, or InvalidSnapshot."""
    if not _checksum_holds(header):  # not a header at all: its name would be noise
        raise InvalidSnapshot(f"the snapshot is not a valid tar archive (bad header checksum at byte {offset:,})")
    name = _name(header)
    kind = header[156:157]
    size = _octal(header[124:136], "size", name)
    if kind in _REGULAR and not (kind == b"\0" and header[0:100].split(b"\0", 1)[0].endswith(b"/")):
        return "file", size
    if kind in _REGULAR or kind == _DIRECTORY:
        if size:  # `tarfile` reads no data after a directory: data here would be parsed as headers
            raise InvalidSnapshot(f"the directory entry {name} in the snapshot carries data")
        return "dir", 0
    if kind == _EXTENDED:
        if after_extended:
            raise InvalidSnapshot(f"the snapshot has two pax headers in a row at {name}")
        if size > MAX_PAX_BYTES:
            raise InvalidSnapshot(
                f"the snapshot has a pax header of {size:,} bytes at {name} (at most {MAX_PAX_BYTES:,})")
        return "pax", size
    if kind in _LINKS:
        raise InvalidSnapshot(f"links are not allowed in a snapshot: {name}")
    if kind in _DEVICES:
        raise InvalidSnapshot(f"device files and FIFOs are not allowed in a snapshot: {name}")
    what = _REFUSED.get(kind, f"entry type {printable(kind.decode('latin-1'))!r}")
    raise InvalidSnapshot(f"unsupported entry type in the snapshot: {what} at {name}")


def check_pax_records(data: bytes, name: str = "a pax header"):
    """The records of a pax header ("LEN KEY=VALUE\\n", LEN counting the whole record), each well
    formed and none with a refused key; only NUL padding may follow them. `tarfile` reads the same
    records (its own regex, stopping at the first that does not match): here a mismatch is an error."""
    pos = 0
    while pos < len(data):
        match = _PAX_RECORD.match(data, pos)
        if not match:
            if data[pos:].strip(b"\0"):
                raise InvalidSnapshot(f"a pax header in the snapshot is malformed at {name}")
            return
        length = int(match.group(1))
        end = pos + length
        if end > len(data) or end <= match.end() or data[end - 1:end] != b"\n":
            raise InvalidSnapshot(f"a pax header in the snapshot is malformed at {name}")
        key = match.group(2).decode("utf-8", "replace")
        if key.startswith("GNU.sparse.") or key in _REFUSED_PAX_KEYS:
            raise InvalidSnapshot(
                f"the pax key {printable(key, 40)!r} is not allowed in a snapshot (at {name})")
        pos = end


class CheckedTarStream(io.RawIOBase):
    """The tar stream of `source` (a binary stream), passed on only once each header is checked."""

    def __init__(self, source):
        self._source = source
        self._ready = bytearray()  # checked bytes the reader has not taken yet
        self._data_left = 0  # bytes of the current entry's data (with padding) still to pass on
        self._after_extended = False
        self._ended = False  # an all-zero block: `tarfile` stops there and parses nothing after it
        self._offset = 0  # of the next header in the tar stream

    def readable(self):
        return True

    def readinto(self, buffer) -> int:
        while not self._ready:
            if not self._advance():
                return 0
        n = min(len(buffer), len(self._ready))
        buffer[:n] = self._ready[:n]
        del self._ready[:n]
        return n

    def _read_exact(self, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            part = self._source.read(n - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def _advance(self) -> bool:
        """Pass on the next checked piece; False at the end of the input."""
        if self._ended or self._data_left:
            piece = self._source.read(65536 if self._ended else min(self._data_left, 65536))
            if not piece:
                return False  # `tarfile` notices data cut short itself
            if not self._ended:
                self._data_left -= len(piece)
            self._ready += piece
            return True
        header = self._read_exact(BLOCK)
        if not header:
            return False
        if len(header) < BLOCK:
            raise InvalidSnapshot("the tar archive in the snapshot is cut short (a partial header)")
        if not header.strip(b"\0"):
            if self._after_extended:
                raise InvalidSnapshot("the tar archive in the snapshot ends right after a pax header")
            self._ended = True
            self._ready += header
            return True
        kind, size = check_header(header, self._after_extended, self._offset)
        self._after_extended = kind == "pax"
        padded = -(-size // BLOCK) * BLOCK
        self._offset += BLOCK + padded
        if kind == "pax":
            # `tarfile` parses the records of the whole padded block, so the padding is checked too.
            records = self._read_exact(padded)
            check_pax_records(records, _name(header))
            self._ready += header + records
        else:
            self._ready += header
            self._data_left = padded
        return True
