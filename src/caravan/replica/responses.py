"""Build ``ModelInferResponse`` / ``ModelStreamInferResponse`` messages (pure).

Outputs are sent as ``raw_output_contents`` (as Triton does): ``text_output`` and
``finish_reason`` are BYTES [1] (length-prefixed), ``num_input_tokens`` and
``num_output_tokens`` UINT32 [1] (little-endian). Every response carries the
parameter ``caravan_replica_id``; streamed responses also carry
``triton_final_response`` (false, then true on the last one), as Triton sets it for
decoupled models.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tritonclient.grpc import service_pb2 as pb

from caravan.replica.contract import MODEL_VERSION
from caravan.replica.request import GenerateRequest, encode_bytes_elements


@dataclass(frozen=True)
class Chunk:
    """One response's worth of generation: new text and its token counts."""

    text: str
    num_input_tokens: int
    num_output_tokens: int
    finish_reason: str | None  # None until the last chunk (rendered "None", like vLLM)


def infer_response(
    model: str,
    replica_id: str,
    req: GenerateRequest,
    chunk: Chunk,
    final: bool | None,
) -> pb.ModelInferResponse:
    """A response for ``req``. ``final`` None: unary (no triton_final_response param)."""
    resp = pb.ModelInferResponse(model_name=model, model_version=MODEL_VERSION, id=req.request_id)
    resp.parameters["caravan_replica_id"].string_param = replica_id
    if final is not None:
        resp.parameters["triton_final_response"].bool_param = final
    wanted = req.requested_outputs
    if wanted is None or "text_output" in wanted:
        _add_bytes(resp, "text_output", chunk.text.encode("utf-8"))
    if req.return_finish_reason and (wanted is None or "finish_reason" in wanted):
        _add_bytes(resp, "finish_reason", str(chunk.finish_reason).encode("utf-8"))
    if req.return_num_input_tokens and (wanted is None or "num_input_tokens" in wanted):
        _add_uint32(resp, "num_input_tokens", chunk.num_input_tokens)
    if req.return_num_output_tokens and (wanted is None or "num_output_tokens" in wanted):
        _add_uint32(resp, "num_output_tokens", chunk.num_output_tokens)
    return resp


def _add_bytes(resp: pb.ModelInferResponse, name: str, data: bytes) -> None:
    resp.outputs.add(name=name, datatype="BYTES", shape=[1])
    resp.raw_output_contents.append(encode_bytes_elements([data]))


def _add_uint32(resp: pb.ModelInferResponse, name: str, value: int) -> None:
    resp.outputs.add(name=name, datatype="UINT32", shape=[1])
    resp.raw_output_contents.append(struct.pack("<I", value))


def stream_error(
    model: str, replica_id: str, request_id: str, message: str
) -> pb.ModelStreamInferResponse:
    """An in-stream error: ``error_message`` set; the stream stays open.

    ``infer_response`` still names the request (id, final=true) so clients that
    multiplex requests on one stream can tell which one failed.
    """
    resp = pb.ModelInferResponse(model_name=model, model_version=MODEL_VERSION, id=request_id)
    resp.parameters["caravan_replica_id"].string_param = replica_id
    resp.parameters["triton_final_response"].bool_param = True
    return pb.ModelStreamInferResponse(error_message=message, infer_response=resp)
