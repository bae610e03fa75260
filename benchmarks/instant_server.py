"""A KServe v2 gRPC server that answers at once with canned, well-formed answers.

    .venv/bin/python benchmarks/instant_server.py --port P [--tokens 8 --procs 1]

For ``bench_client.py`` only: the load generator's capacity on one core can only be
measured against a server that is cheaper per request than the client, and the
simulated replica (``caravan replica``) costs about as much CPU per request as the
client does, so against it the client idles and the ratio measures idle wake-ups.
This server skips everything but the wire: requests are not decoded, and every answer
is pre-serialized bytes shaped like a vLLM replica's (``text_output``,
``num_input_tokens``, ``num_output_tokens`` UINT32, ``caravan_replica_id``):

* ``ModelInfer``: one response with ``num_output_tokens`` = ``--tokens``;
* ``ModelStreamInfer``: for every request on the stream, ``--tokens`` responses of one
  token each, the last flagged ``triton_final_response``.

``--procs N`` starts N server processes sharing the port (``SO_REUSEPORT``).
Not a product feature and never used by ``caravan`` itself.
"""

from __future__ import annotations

import argparse
import multiprocessing
from collections.abc import AsyncIterator

import grpc
from tritonclient.grpc import service_pb2

from caravan.bench import loop as bench_loop

PREFIX = "/inference.GRPCInferenceService/"


def answer(tokens: int, final: bool, text: str) -> service_pb2.ModelInferResponse:
    """One response the way ``caravan replica`` sends it (raw output tensors)."""
    resp = service_pb2.ModelInferResponse(model_name="bench", id="0")
    data = text.encode()
    for name, dtype, raw in (("text_output", "BYTES", len(data).to_bytes(4, "little") + data),
                             ("num_input_tokens", "UINT32", (16).to_bytes(4, "little")),
                             ("num_output_tokens", "UINT32", tokens.to_bytes(4, "little"))):
        resp.outputs.add(name=name, datatype=dtype, shape=[1])
        resp.raw_output_contents.append(raw)
    resp.parameters["caravan_replica_id"].string_param = "instant"
    resp.parameters["triton_final_response"].bool_param = final
    return resp


def handlers(tokens: int) -> grpc.GenericRpcHandler:
    unary = answer(tokens, True, " tok" * tokens).SerializeToString()
    chunks = [service_pb2.ModelStreamInferResponse(
        infer_response=answer(1, i == tokens - 1, " tok")).SerializeToString() for i in range(tokens)]

    async def infer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return unary

    async def stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
                     ) -> AsyncIterator[bytes]:
        async for _ in requests:
            for chunk in chunks:
                yield chunk

    return grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(infer),
        "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(stream),
    })


async def serve(port: int, tokens: int) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    server.add_generic_rpc_handlers((handlers(tokens),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def run(port: int, tokens: int) -> None:
    bench_loop.run(serve(port, tokens))  # uvloop when installed: less CPU per answer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tokens", type=int, default=8, help="tokens per answer (>= 1)")
    p.add_argument("--procs", type=int, default=1, help="server processes sharing the port")
    args = p.parse_args()
    if args.tokens < 1:
        raise SystemExit(f"--tokens: must be >= 1, got {args.tokens}")
    procs = [multiprocessing.Process(target=run, args=(args.port, args.tokens), daemon=True)
             for _ in range(max(1, args.procs) - 1)]
    for proc in procs:
        proc.start()
    run(args.port, args.tokens)


if __name__ == "__main__":
    main()
