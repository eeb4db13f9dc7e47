"""WhatsApp's binary-XML token dictionaries, read out of the neonize library the client runs.

The client compresses common strings to indexes in these tables, so the simulator must use the very
same ones. Rather than keep a copy, they are read from neonize's shared library, where whatsmeow's
tables are compiled in as Go string headers (8-byte pointer, 8-byte length):
- the single-byte table is the array of headers whose entry 1 is "xmlstreamstart" (entry 0 is "");
- the four double-byte tables are the 256-entry slices (pointer, len 256, cap 256) that point into
  the same run of headers; the first one starts where the single-byte table ends.
So the tables always match the whatsmeow version neonize bundles. A layout this does not recognise
raises TokenTableError (the simulator cannot work without the tables; nothing is guessed).
"""

from __future__ import annotations

import importlib.util
import re
import struct
from pathlib import Path

DICT_VERSION = 3  # sent in the connection header; whatsmeow's token.DictVersion
_ANCHOR = b"xmlstreamstart"
_DOUBLE_SIZE = 256
_DICTIONARIES = 4


class TokenTableError(RuntimeError):
    pass


def neonize_library() -> Path:
    spec = importlib.util.find_spec("neonize")
    if spec is None or not spec.submodule_search_locations:
        raise TokenTableError("neonize is not installed")
    package = Path(list(spec.submodule_search_locations)[0])
    found = sorted(package.glob("neonize-*.so"))
    if not found:
        raise TokenTableError(f"no neonize shared library in {package}")
    return found[0]


class _Image:
    """The ELF file's loadable segments, to turn virtual addresses into file offsets."""

    def __init__(self, data: bytes) -> None:
        if data[:4] != b"\x7fELF" or data[4] != 2:
            raise TokenTableError("neonize's library is not a 64-bit ELF file")
        self.data = data
        phoff, = struct.unpack_from("<Q", data, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
        self.loads = []
        for i in range(phnum):
            p_type, _, offset, vaddr, _, filesz, _, _ = struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize)
            if p_type == 1:  # PT_LOAD
                self.loads.append((offset, vaddr, filesz))

    def address_of(self, offset: int) -> int | None:
        for start, vaddr, size in self.loads:
            if start <= offset < start + size:
                return vaddr + offset - start
        return None

    def offset_of(self, address: int) -> int | None:
        for start, vaddr, size in self.loads:
            if vaddr <= address < vaddr + size:
                return start + address - vaddr
        return None

    def string(self, header_offset: int) -> str:
        pointer, length = struct.unpack_from("<QQ", self.data, header_offset)
        if length == 0:
            return ""
        offset = self.offset_of(pointer)
        if offset is None or length > 4096:
            raise TokenTableError(f"no string behind the header at {header_offset:#x}")
        return self.data[offset:offset + length].decode("utf-8")


def _find_single_byte_start(image: _Image) -> int:
    for match in re.finditer(re.escape(_ANCHOR), image.data):
        address = image.address_of(match.start())
        if address is None:
            continue
        header = image.data.find(struct.pack("<QQ", address, len(_ANCHOR)))
        if header >= 16 and struct.unpack_from("<QQ", image.data, header - 16)[1] == 0:
            return header - 16
    raise TokenTableError("the single-byte token table was not found in neonize's library")


def load_tables(path: Path | None = None) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    image = _Image((path or neonize_library()).read_bytes())
    start = _find_single_byte_start(image)
    start_address = image.address_of(start)
    # The double-byte slices: (pointer into the run of headers, 256, 256), four in a row.
    starts = []
    for match in re.finditer(re.escape(struct.pack("<QQ", _DOUBLE_SIZE, _DOUBLE_SIZE)), image.data):
        pointer, = struct.unpack_from("<Q", image.data, match.start() - 8)
        index, rest = divmod(pointer - start_address, 16)
        if rest == 0 and 0 < index < 4096:
            starts.append(index)
    starts = sorted(set(starts))
    if len(starts) != _DICTIONARIES or any(b - a != _DOUBLE_SIZE for a, b in zip(starts, starts[1:])):
        raise TokenTableError(f"expected {_DICTIONARIES} double-byte token tables, found starts {starts}")
    single = tuple(image.string(start + 16 * i) for i in range(starts[0]))
    double = tuple(
        tuple(image.string(start + 16 * (first + i)) for i in range(_DOUBLE_SIZE)) for first in starts
    )
    if single[1] != _ANCHOR.decode() or single[3] != "s.whatsapp.net":
        raise TokenTableError("the single-byte token table does not look like whatsmeow's")
    return single, double


SINGLE_BYTE_TOKENS, DOUBLE_BYTE_TOKENS = load_tables()
