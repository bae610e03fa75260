"""A KServe v2 gRPC server that answers at once with canned, well-formed answers.

    .venv/bin/python benchmarks/instant_server.py --port P [--tokens 8 --procs 1]

For ``bench_client.py`` only: the load generator's capacity on one core can only be
measured against a server that is cheaper per request than the client, and a real
replica (``tritonserver`` with the simulated vLLM engine) costs more CPU per request
than the client does, so against it the client idles and the ratio measures idle
wake-ups. This server skips everything but the wire: it reads only a request's
``stream`` input, and every answer is pre-serialized bytes shaped like a Triton vLLM
replica's (``text_output``, ``num_input_tokens``, ``num_output_tokens`` UINT32,
``triton_final_response``; nothing naming a replica, as real Triton sends none):

* ``ModelStreamInfer``, per request on the stream: ``stream`` true -> ``--tokens``
  responses of one token each, the last flagged final; ``stream`` false or absent ->
  exactly ONE final response with all ``--tokens`` tokens (what Triton's vLLM backend
  sends, and what ``caravan bench --no-stream`` requires);
* ``ModelInfer``: UNIMPLEMENTED with Triton's message for decoupled models (the vLLM
  model serves no unary inference).

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
DECOUPLED_UNARY = "ModelInfer RPC doesn't support models with decoupled transaction policy"


def answer(tokens: int, final: bool, text: str) -> service_pb2.ModelInferResponse:
    """One response the way Triton's vLLM backend sends it (raw output tensors)."""
    resp = service_pb2.ModelInferResponse(model_name="bench", model_version="1", id="0")
    data = text.encode()
    for name, dtype, raw in (("text_output", "BYTES", len(data).to_bytes(4, "little") + data),
                             ("num_input_tokens", "UINT32", (16).to_bytes(4, "little")),
                             ("num_output_tokens", "UINT32", tokens.to_bytes(4, "little"))):
        resp.outputs.add(name=name, datatype=dtype, shape=[1])
        resp.raw_output_contents.append(raw)
    resp.parameters["triton_final_response"].bool_param = final
    return resp


def streamed(request: bytes) -> bool:
    """The request's ``stream`` input (raw BOOL byte, or typed contents); False when absent."""
    req = service_pb2.ModelInferRequest.FromString(request)
    for i, t in enumerate(req.inputs):
        if t.name == "stream":
            if i < len(req.raw_input_contents):
                return req.raw_input_contents[i][:1] == b"\x01"
            return bool(t.contents.bool_contents and t.contents.bool_contents[0])
    return False


def handlers(tokens: int) -> grpc.GenericRpcHandler:
    whole = [service_pb2.ModelStreamInferResponse(
        infer_response=answer(tokens, True, " tok" * tokens)).SerializeToString()]
    chunks = [service_pb2.ModelStreamInferResponse(
        infer_response=answer(1, i == tokens - 1, " tok")).SerializeToString() for i in range(tokens)]

    async def infer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, DECOUPLED_UNARY)
        return b""  # not reached: abort raises

    async def stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
                     ) -> AsyncIterator[bytes]:
        async for request in requests:
            for response in chunks if streamed(request) else whole:
                yield response

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
