"""A tiny Triton-protocol replica for the xDS integration tests (test code only).

Inference tests run against the real ``tritonserver`` (``xds_envoy_harness.start_replica``,
e.g. ``test_xds_envoy.py``). This stub stays only where a test needs what the real
server cannot produce on demand:

* ``test_xds_envoy_headers.py``: ``--fail-streams`` (a replica failing every stream
  with UNAVAILABLE *before* any response, i.e. before response headers, at will: the
  case Envoy retries; tritonserver has no switch for that, and killing it would also
  fail Envoy's health check and remove the host), and answers that name the replica
  (``hello from ID``, exactly ``tok0 tok1 tok2``) so header routing is checked by exact
  text, including the example client's stdout;
* ``test_xds_envoy_delta_ha.py``: the ``x-request-id`` the replica received, echoed back
  as a response parameter (request-id propagation; on 2.51 a Python model cannot set
  response parameters, docs/triton-contract.md C12), and sub-second start-ups for
  control-plane tests that restart stacks per test.

``python xds_stub_replica.py --port P --id ID --model M [--fail-streams]`` serves on
127.0.0.1:P what a tritonserver with the (decoupled) vLLM backend serves:

* ``ModelStreamInfer``: per request, with input ``stream`` true, 3 chunks (the last
  flagged ``triton_final_response``); with ``stream`` false or absent, one final
  response with the whole text ``hello from ID``. An unknown model is an in-stream
  ``error_message``. ``--fail-streams``: every stream fails with UNAVAILABLE before
  any response (so before response headers), as a replica dying mid-prefill would.
* ``ModelInfer``: UNIMPLEMENTED, with Triton's message for decoupled models.
* ``ServerLive``/``ServerReady`` and ``grpc.health.v1`` (SERVING).

Responses carry the x-request-id the stub saw upstream as parameter ``x_request_id``
(for the request-id propagation test), every request header it saw as parameter
``request_headers`` (a JSON list of [name, value] pairs: what
``tests/integration/security/test_security_headers.py`` checks for spoofed headers, which
Triton cannot echo) and nothing naming the replica: tests learn who
served a request from Envoy's ``x-caravan-upstream`` header, as production clients do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pbg

DECOUPLED_UNARY = "ModelInfer RPC doesn't support models with decoupled transaction policy"


def _bytes_tensor(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<I", len(data)) + data


def _stream_flag(req: pb.ModelInferRequest) -> bool:
    for i, t in enumerate(req.inputs):
        if t.name == "stream":
            if i < len(req.raw_input_contents):
                return req.raw_input_contents[i][:1] == b"\x01"
            return bool(t.contents.bool_contents and t.contents.bool_contents[0])
    return False


class Stub(pbg.GRPCInferenceServiceServicer):
    def __init__(self, replica_id: str, model: str, fail_streams: bool) -> None:
        self.replica_id = replica_id
        self.model = model
        self.fail_streams = fail_streams

    def _response(self, req: pb.ModelInferRequest, text: str, rid: str, final: bool,
                  seen: str = "[]") -> pb.ModelInferResponse:
        resp = pb.ModelInferResponse(model_name=req.model_name, model_version="1", id=req.id)
        resp.outputs.add(name="text_output", datatype="BYTES", shape=[1])
        resp.raw_output_contents.append(_bytes_tensor(text))
        resp.parameters["x_request_id"].string_param = rid
        resp.parameters["request_headers"].string_param = seen
        resp.parameters["triton_final_response"].bool_param = final
        return resp

    async def ModelInfer(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, DECOUPLED_UNARY)

    async def ModelStreamInfer(self, request_iterator, context) -> AsyncIterator[pb.ModelStreamInferResponse]:
        if self.fail_streams:
            # Read the client's request to its end first, as a replica that fails while
            # generating does: Envoy retries only a request it has received whole (an
            # upstream that answers before the request ends was seen not to be retried).
            async for _ in request_iterator:
                pass
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.replica_id} is failing")
        rid = dict(context.invocation_metadata()).get("x-request-id", "")
        seen = json.dumps(sorted([k, v] for k, v in context.invocation_metadata()))
        async for request in request_iterator:
            if request.model_name != self.model:
                yield pb.ModelStreamInferResponse(
                    error_message=f"Request for unknown model: '{request.model_name}' is not found")
                continue
            if not _stream_flag(request):
                await asyncio.sleep(0.01)
                yield pb.ModelStreamInferResponse(
                    infer_response=self._response(request, f"hello from {self.replica_id}", rid, True, seen))
                continue
            for i in range(3):
                await asyncio.sleep(0.01)
                yield pb.ModelStreamInferResponse(infer_response=self._response(request, f"tok{i} ", rid, i == 2, seen))

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)


async def main(port: int, replica_id: str, model: str, fail_streams: bool) -> None:
    server = grpc.aio.server()
    pbg.add_GRPCInferenceServiceServicer_to_server(Stub(replica_id, model, fail_streams), server)
    hs = health.aio.HealthServicer()
    await hs.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--fail-streams", action="store_true")
    a = p.parse_args()
    asyncio.run(main(a.port, a.id, a.model, a.fail_streams))
