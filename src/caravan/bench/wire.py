"""KServe v2 request bytes for one benchmark request (pure, no I/O).

``encode_request`` builds the serialized ``inference.ModelInferRequest`` (the message
class shipped in ``tritonclient.grpc.service_pb2``) for a ``RequestSpec`` once, before
the timed phase, so sending a request costs one gRPC call and nothing else. Tensors
follow Triton's vLLM backend contract and travel in ``raw_input_contents`` exactly as
``tritonclient``'s ``InferInput.set_data_from_numpy`` lays them out:

* BYTES[1]: a 4-byte little-endian length, then the bytes;
* BOOL[1]: one byte, 0 or 1.

Inputs: ``text_input``, ``stream``, ``sampling_parameters`` (JSON with ``max_tokens``
from the spec plus the target's extra fields), ``exclude_input_in_output`` = True and,
with ``count_tokens``, ``return_num_input_tokens`` / ``return_num_output_tokens``.
``id`` is the spec's index (Triton echoes it in every response).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tritonclient.grpc import service_pb2

from caravan.tensor_bytes import encode_bytes_elements

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
MODEL_STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"


def bytes_element(data: bytes) -> bytes:
    """One BYTES element in Triton's raw layout: 4-byte little-endian length + data."""
    return encode_bytes_elements([data])


def bool_element(value: bool) -> bytes:
    """One BOOL element in Triton's raw layout (one byte)."""
    return b"\x01" if value else b"\x00"


def request_tensors(
    prompt: str, max_tokens: int, stream: bool, count_tokens: bool, sampling: Mapping[str, Any]
) -> list[tuple[str, str, bytes]]:
    """``(name, datatype, raw bytes)`` of every input tensor, in send order."""
    params = json.dumps({**sampling, "max_tokens": max_tokens}).encode()
    tensors = [
        ("text_input", "BYTES", bytes_element(prompt.encode())),
        ("stream", "BOOL", bool_element(stream)),
        ("sampling_parameters", "BYTES", bytes_element(params)),
        ("exclude_input_in_output", "BOOL", bool_element(True)),
    ]
    if count_tokens:
        tensors.append(("return_num_input_tokens", "BOOL", bool_element(True)))
        tensors.append(("return_num_output_tokens", "BOOL", bool_element(True)))
    return tensors


def encode_request(
    model: str,
    request_id: str,
    prompt: str,
    max_tokens: int,
    *,
    stream: bool,
    count_tokens: bool = True,
    sampling: Mapping[str, Any] | None = None,
) -> bytes:
    """The serialized ``ModelInferRequest`` for one prompt (every tensor shape ``[1]``)."""
    req = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    for name, dtype, raw in request_tensors(prompt, max_tokens, stream, count_tokens, sampling or {}):
        req.inputs.add(name=name, datatype=dtype, shape=[1])
        req.raw_input_contents.append(raw)
    return bytes(req.SerializeToString())


def decode_stream_response(data: bytes) -> Any:
    """A ``ModelStreamInferResponse`` from its wire bytes (``error_message``, ``infer_response``)."""
    return service_pb2.ModelStreamInferResponse.FromString(data)


def decode_response(data: bytes) -> Any:
    """A ``ModelInferResponse`` from its wire bytes."""
    return service_pb2.ModelInferResponse.FromString(data)
