"""read_answer: one pass over a ModelInferResponse (raw and typed tensors); upstream_host."""

from __future__ import annotations

import pytest
from tritonclient.grpc import service_pb2

from caravan.bench.answer import Answer, read_answer, sum_u32, upstream_host


def u32(*values: int) -> bytes:
    return b"".join(v.to_bytes(4, "little") for v in values)


def text(s: str) -> bytes:
    data = s.encode()
    return len(data).to_bytes(4, "little") + data


def response(raw: list[tuple[str, bytes]], typed: list[tuple[str, list[int] | list[bytes]]] = (),
             params: dict[str, str | bool] | None = None) -> service_pb2.ModelInferResponse:
    """Raw outputs first (as Triton sends them), then typed ``contents`` outputs."""
    resp = service_pb2.ModelInferResponse(model_name="m")
    for name, data in raw:
        resp.outputs.add(name=name)
        resp.raw_output_contents.append(data)
    for name, values in typed:
        out = resp.outputs.add(name=name)
        if values and isinstance(values[0], bytes):
            out.contents.bytes_contents.extend(values)
        else:
            out.contents.uint_contents.extend(values)
    for key, value in (params or {}).items():
        if isinstance(value, bool):
            resp.parameters[key].bool_param = value
        else:
            resp.parameters[key].string_param = value
    return resp


CASES = [
    ("raw-all", response([("text_output", text("hi")), ("num_input_tokens", u32(16)),
                          ("num_output_tokens", u32(4))],
                         params={"caravan_replica_id": "r-1", "triton_final_response": True}),
     Answer(16, 4, True, True)),  # a replica-side id parameter is ignored
    ("raw-multi-value-sum", response([("num_output_tokens", u32(2, 3, 5))]),
     Answer(None, 10, False, False)),
    ("raw-empty-text", response([("text_output", text(""))],
                                params={"triton_final_response": False}),
     Answer(None, None, False, False)),
    ("typed-contents", response([], [("num_input_tokens", [7]), ("num_output_tokens", [1, 2]),
                                     ("text_output", [b"x"])]),
     Answer(7, 3, True, False)),
    ("nothing", response([]), Answer(None, None, False, False)),
    ("first-of-repeated-name", response([("num_output_tokens", u32(1)),
                                         ("num_output_tokens", u32(9))]),
     Answer(None, 1, False, False)),
]


@pytest.mark.parametrize(("resp", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_read_answer(resp: service_pb2.ModelInferResponse, want: Answer) -> None:
    assert read_answer(resp) == want


@pytest.mark.parametrize(("raw", "want"), [(u32(5), 5), (u32(1, 2), 3), (u32(2**32 - 1), 2**32 - 1),
                                           (b"", 0)], ids=["one", "two", "max", "empty"])
def test_sum_u32(raw: bytes, want: int) -> None:
    assert sum_u32(raw) == want


def test_sum_u32_rejects_partial_values() -> None:
    with pytest.raises(ValueError):
        sum_u32(b"\x01\x00\x00")


@pytest.mark.parametrize(
    ("metadata", "want"),
    [((("content-type", "application/grpc"), ("x-caravan-upstream", "10.0.0.7:8001")), "10.0.0.7:8001"),
     ((("x-caravan-upstream", b"10.0.0.7:8001"),), "10.0.0.7:8001"),
     ((("x-upstream", "elsewhere:1"),), ""),
     ((), ""),
     (None, "")],
    ids=["str", "bytes", "other-header", "empty", "none"],
)
def test_upstream_host_reads_envoys_header(
        metadata: tuple[tuple[str, str | bytes], ...] | None, want: str) -> None:
    assert upstream_host(metadata) == want
