"""A tiny Triton-protocol replica for the xDS integration tests (test code only).

``python xds_stub_replica.py --port P --id ID --model M`` serves ``ModelInfer``,
``ModelStreamInfer`` (3 chunks, the last with ``triton_final_response``),
``ServerLive``/``ServerReady`` and ``grpc.health.v1`` on 127.0.0.1:P. Every response
carries the parameter ``caravan_replica_id`` (and the request's x-request-id seen
upstream as ``x_request_id``), so tests can tell which replica served them.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pbg


def _bytes_tensor(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<I", len(data)) + data


class Stub(pbg.GRPCInferenceServiceServicer):
    def __init__(self, replica_id: str, model: str) -> None:
        self.replica_id = replica_id
        self.model = model

    def _response(
        self, req: pb.ModelInferRequest, text: str, rid: str, final: bool | None
    ) -> pb.ModelInferResponse:
        resp = pb.ModelInferResponse(model_name=req.model_name, model_version="1", id=req.id)
        resp.outputs.add(name="text_output", datatype="BYTES", shape=[1])
        resp.raw_output_contents.append(_bytes_tensor(text))
        resp.parameters["caravan_replica_id"].string_param = self.replica_id
        resp.parameters["x_request_id"].string_param = rid
        if final is not None:
            resp.parameters["triton_final_response"].bool_param = final
        return resp

    async def ModelInfer(self, request, context):
        if request.model_name != self.model:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{request.model_name}'"
            )
        rid = dict(context.invocation_metadata()).get("x-request-id", "")
        return self._response(request, f"hello from {self.replica_id}", rid, None)

    async def ModelStreamInfer(
        self, request_iterator, context
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        rid = dict(context.invocation_metadata()).get("x-request-id", "")
        async for request in request_iterator:
            for i in range(3):
                await asyncio.sleep(0.01)
                yield pb.ModelStreamInferResponse(
                    infer_response=self._response(request, f"tok{i} ", rid, i == 2)
                )

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)


async def main(port: int, replica_id: str, model: str) -> None:
    server = grpc.aio.server()
    pbg.add_GRPCInferenceServiceServicer_to_server(Stub(replica_id, model), server)
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
    a = p.parse_args()
    asyncio.run(main(a.port, a.id, a.model))
