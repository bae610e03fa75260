"""tensor_bytes: Triton's raw BYTES layout, shared by the replica and the load generator."""

from __future__ import annotations

import pytest

from caravan.tensor_bytes import BytesLayoutError, decode_bytes_elements, encode_bytes_elements


def test_round_trip_keeps_order_and_empty_elements() -> None:
    items = [b"a", b"", b"\x00\xff", "é".encode()]
    raw = encode_bytes_elements(items)
    assert raw[:5] == b"\x01\x00\x00\x00a"
    assert decode_bytes_elements(raw) == items
    assert decode_bytes_elements(b"") == []


@pytest.mark.parametrize(("raw", "offset", "length"), [
    (b"\x01\x00", 0, None),
    (b"\x05\x00\x00\x00ab", 0, 5),
    (b"\x01\x00\x00\x00a\x02\x00", 5, None),
])
def test_malformed_data_says_where_and_what(raw: bytes, offset: int, length: int | None) -> None:
    with pytest.raises(BytesLayoutError) as err:
        decode_bytes_elements(raw)
    assert (err.value.offset, err.value.length, err.value.size) == (offset, length, len(raw))
