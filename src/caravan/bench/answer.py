"""What the load generator reads from one response (pure, no I/O).

``read_answer`` walks a ``ModelInferResponse``'s outputs once (the hot path of every
request: protobuf field access is the cost, so one pass instead of one per field) and
returns the ``num_input_tokens`` and ``num_output_tokens`` UINT32 outputs (summed;
None when absent), whether ``text_output`` holds non-empty text and whether the
response is flagged ``triton_final_response``. Tensors may come as raw bytes
(``raw_output_contents``, what Triton sends) or typed ``contents``; both are read.
When a name repeats, its first output counts. ValueError when raw UINT32 bytes are not
a multiple of 4.

``upstream_host`` reads which replica served a request from the call's initial
metadata: Envoy's routes add ``UPSTREAM_HOST_HEADER`` (``host:port`` of the upstream,
see ``caravan.xds.resources``). Replica-side response parameters are not used: real
Triton sends none that name the replica.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np

from caravan.spec.names import UPSTREAM_HOST_HEADER
from caravan.tensor_bytes import BytesLayoutError, decode_bytes_elements

FINAL_PARAM = "triton_final_response"


class Answer(NamedTuple):
    tokens_in: int | None
    tokens_out: int | None
    text: bool
    final: bool


def read_answer(resp: Any) -> Answer:
    """One pass over ``resp`` (a ``ModelInferResponse``); see the module contract."""
    raw = resp.raw_output_contents
    n_raw = len(raw)
    tokens_in = tokens_out = None
    text: bool | None = None
    for i, out in enumerate(resp.outputs):
        name = out.name
        if name == "num_output_tokens":
            if tokens_out is None:
                tokens_out = sum_u32(raw[i]) if i < n_raw else int(sum(out.contents.uint_contents))
        elif name == "num_input_tokens":
            if tokens_in is None:
                tokens_in = sum_u32(raw[i]) if i < n_raw else int(sum(out.contents.uint_contents))
        elif name == "text_output" and text is None:
            # BYTES raw layout: 4-byte length, then the data
            text = len(raw[i]) > 4 if i < n_raw else any(out.contents.bytes_contents)
    fin = resp.parameters.get(FINAL_PARAM)
    return Answer(tokens_in, tokens_out, bool(text), fin is not None and bool(fin.bool_param))


def upstream_host(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The ``UPSTREAM_HOST_HEADER`` value (``host:port``) in gRPC ``metadata`` (key,
    value pairs, as ``grpc.aio`` gives them); ``""`` when absent (no Envoy in front,
    or Envoy chose no upstream) or when ``metadata`` is None."""
    for key, value in metadata or ():
        if key == UPSTREAM_HOST_HEADER:
            return value if isinstance(value, str) else value.decode(errors="replace")
    return ""


def sum_u32(raw: bytes) -> int:
    """Sum of little-endian UINT32 values in ``raw`` (one value, the common case, without
    numpy). ValueError for a length that is not a multiple of 4."""
    if len(raw) == 4:
        return int.from_bytes(raw, "little")
    return int(np.frombuffer(raw, dtype="<u4").sum())



def text_outputs(resp: Any) -> list[str]:
    """Every element of ``resp``'s first ``text_output`` tensor, decoded as UTF-8
    (undecodable bytes replaced); [] when there is none. Raw BYTES layout: repeated
    4-byte little-endian length + data. ValueError for a truncated raw tensor."""
    raw = resp.raw_output_contents
    for i, out in enumerate(resp.outputs):
        if out.name == "text_output":
            if i < len(raw):
                return [b.decode(errors="replace") for b in split_bytes(raw[i])]
            return [b.decode(errors="replace") for b in out.contents.bytes_contents]
    return []


def split_bytes(raw: bytes) -> list[bytes]:
    """The elements of a raw BYTES tensor. ValueError when a length runs past the end."""
    try:
        return decode_bytes_elements(raw)
    except BytesLayoutError as exc:
        if exc.length is None:
            raise ValueError(f"raw BYTES tensor: truncated length at byte {exc.offset} of {exc.size}") from None
        raise ValueError(
            f"raw BYTES tensor: element of {exc.length} bytes runs past byte {exc.size}") from None
