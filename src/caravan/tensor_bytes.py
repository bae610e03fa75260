"""Triton's raw BYTES tensor layout (KServe v2 ``raw_*_contents``), pure.

Each element is a 4-byte little-endian length followed by that many bytes, repeated.
Shared by the replica simulator (parsing requests, building answers) and the load
generator (building requests, reading answers); each turns ``BytesLayoutError`` into
its own error wording.
"""

from __future__ import annotations

import struct

from caravan.errors import CaravanError


class BytesLayoutError(CaravanError, ValueError):
    """Malformed raw BYTES data. ``offset``: where the bad element starts (bytes);
    ``length``: the element length read there, or None when the 4-byte length
    prefix itself is cut short."""

    def __init__(self, offset: int, length: int | None, size: int) -> None:
        self.offset, self.length, self.size = offset, length, size
        what = ("truncated length prefix" if length is None
                else f"element of {length} bytes runs past the end")
        super().__init__(f"raw BYTES tensor: {what} (offset {offset} of {size})")


def encode_bytes_elements(items: list[bytes]) -> bytes:
    """Raw BYTES data holding ``items`` in order."""
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def decode_bytes_elements(raw: bytes) -> list[bytes]:
    """The elements of raw BYTES data; ``BytesLayoutError`` when it is malformed."""
    out: list[bytes] = []
    pos = 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise BytesLayoutError(pos, None, len(raw))
        (n,) = struct.unpack_from("<I", raw, pos)
        if pos + 4 + n > len(raw):
            raise BytesLayoutError(pos, n, len(raw))
        out.append(raw[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out
