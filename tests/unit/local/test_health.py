"""infer_once: one ModelStreamInfer request against an in-process scripted server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest
from tritonclient.grpc import service_pb2 as pb

from caravan.bench.answer import split_bytes
from caravan.local.health import PROBE_MAX_TOKENS, final_without_error, infer_once
from caravan.local.process import free_port

Script = Callable[[grpc.ServicerContext], Iterator[pb.ModelStreamInferResponse]]


def final(flag: bool | None = True) -> pb.ModelStreamInferResponse:
    resp = pb.ModelInferResponse(model_name="m")
    if flag is not None:
        resp.parameters["triton_final_response"].bool_param = flag
    return pb.ModelStreamInferResponse(infer_response=resp)


def error(msg: str = "model not ready") -> pb.ModelStreamInferResponse:
    return pb.ModelStreamInferResponse(error_message=msg)


@dataclass
class Server:
    """Serves only ModelStreamInfer; records each request's metadata and message."""

    script: Script
    seen: list[tuple[dict[str, str], pb.ModelInferRequest]] = field(default_factory=list)

    def stream(self, requests: Iterator[pb.ModelInferRequest],
               context: grpc.ServicerContext) -> Iterator[pb.ModelStreamInferResponse]:
        md = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        for req in requests:
            self.seen.append((md, req))
        yield from self.script(context)


def probe(script: Script, model_header: str = "x-model", timeout_s: float = 5.0) -> tuple[bool, Server]:
    server = Server(script)
    srv = grpc.server(futures.ThreadPoolExecutor(2))
    handler = grpc.stream_stream_rpc_method_handler(
        server.stream, request_deserializer=pb.ModelInferRequest.FromString,
        response_serializer=pb.ModelStreamInferResponse.SerializeToString)
    srv.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {"ModelStreamInfer": handler}),))
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    try:
        return infer_once(f"127.0.0.1:{port}", "m", timeout_s, model_header), server
    finally:
        srv.stop(None)


def tensor(req: pb.ModelInferRequest, name: str) -> bytes:
    return bytes(req.raw_input_contents[[t.name for t in req.inputs].index(name)])


def test_one_stream_false_request_answered_by_a_final_response() -> None:
    ok, server = probe(lambda ctx: iter([final()]))
    assert ok
    ((md, req),) = server.seen
    assert md["x-model"] == "m" and req.model_name == "m"
    assert tensor(req, "stream") == b"\x00"
    (params,) = split_bytes(tensor(req, "sampling_parameters"))
    assert json.loads(params) == {"max_tokens": PROBE_MAX_TOKENS}


def test_the_configured_model_header_is_sent() -> None:
    ok, server = probe(lambda ctx: iter([final()]), model_header="x-llm")
    assert ok
    ((md, _),) = server.seen
    assert md["x-llm"] == "m" and "x-model" not in md


def unimplemented(ctx: grpc.ServicerContext) -> Iterator[pb.ModelStreamInferResponse]:
    ctx.abort(grpc.StatusCode.UNIMPLEMENTED, "caravan: unknown model in header x-model")
    yield from ()


def slow(ctx: grpc.ServicerContext) -> Iterator[pb.ModelStreamInferResponse]:
    time.sleep(1.0)
    yield final()


@pytest.mark.parametrize(
    "script",
    [lambda ctx: iter([error()]),
     lambda ctx: iter([final(False), error()]),
     lambda ctx: iter([final(False)]),
     lambda ctx: iter([final(None)]),
     lambda ctx: iter([]),
     unimplemented],
    ids=["in-stream-error", "error-after-a-chunk", "never-final", "no-final-flag", "no-response",
         "grpc-error"],
)
def test_anything_but_a_clean_final_answer_is_false(script: Script) -> None:
    ok, _ = probe(script)
    assert not ok


def test_bounded_by_its_timeout() -> None:
    t = time.monotonic()
    ok, _ = probe(slow, timeout_s=0.2)
    assert not ok and time.monotonic() - t < 1.0


def test_nothing_listening_is_false() -> None:
    assert not infer_once(f"127.0.0.1:{free_port()}", "m", timeout_s=0.5)


def test_final_without_error_reads_to_the_end() -> None:
    assert final_without_error([final(False), final(True)])
    assert not final_without_error([final(True), error()])
