"""TritonTransport against an in-process ModelStreamInfer server with scripted answers.

The fake server records each request's gRPC metadata and decoded message, sends
``x-caravan-upstream`` as initial metadata (as Envoy's routes do) and then the scripted
responses. No Envoy, no replica process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2 as pb

from caravan.bench.dataset import RequestSpec
from caravan.bench.session import header_names
from caravan.bench.stats import RequestRecord
from caravan.bench.triton import Target, TritonTransport, request_metadata
from caravan.bench.wire import bytes_element
from caravan.xds.resources import UPSTREAM_HOST_HEADER

UPSTREAM = "10.1.2.3:8001"


def answer(text: str, final: bool | None, tokens: int | None = None) -> pb.ModelStreamInferResponse:
    resp = pb.ModelInferResponse(model_name="m", id="0")
    resp.outputs.add(name="text_output", datatype="BYTES", shape=[1])
    resp.raw_output_contents.append(bytes_element(text.encode()))
    if tokens is not None:
        resp.outputs.add(name="num_output_tokens", datatype="UINT32", shape=[1])
        resp.raw_output_contents.append(tokens.to_bytes(4, "little"))
    if final is not None:
        resp.parameters["triton_final_response"].bool_param = final
    return pb.ModelStreamInferResponse(infer_response=resp)


@dataclass
class FakeServer:
    """Answers every stream with ``script`` (after ``upstream`` as initial metadata);
    with ``abort``, fails it at once with that status and ``upstream`` as a trailer
    (what a client gets when Envoy relays a headers-only error reply)."""

    script: Sequence[pb.ModelStreamInferResponse]
    upstream: str = UPSTREAM
    abort: grpc.StatusCode | None = None
    seen: list[tuple[dict[str, str], pb.ModelInferRequest]] = field(default_factory=list)

    async def stream(self, requests: AsyncIterator[pb.ModelInferRequest],
                     context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ModelStreamInferResponse]:
        md = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        if self.abort is not None:
            context.set_trailing_metadata(((UPSTREAM_HOST_HEADER, self.upstream),))
            await context.abort(self.abort, "replica going away")
        if self.upstream:
            await context.send_initial_metadata(((UPSTREAM_HOST_HEADER, self.upstream),))
        async for req in requests:
            self.seen.append((md, req))
            for resp in self.script:
                await asyncio.sleep(0.001)
                yield resp


async def serve(stream: Any) -> tuple[grpc.aio.Server, int]:
    """A started gRPC server on a free 127.0.0.1 port answering ModelStreamInfer with
    ``stream``; returns it and its port."""
    srv = grpc.aio.server()
    handler = grpc.stream_stream_rpc_method_handler(
        stream, request_deserializer=pb.ModelInferRequest.FromString,
        response_serializer=pb.ModelStreamInferResponse.SerializeToString)
    srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelStreamInfer": handler}),))
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    return srv, port


def run(server: FakeServer, target_kw: dict[str, Any], specs: Sequence[RequestSpec]) -> list[RequestRecord]:
    """Start ``server`` on a free port, send ``specs`` one by one, stop the server."""

    async def go() -> list[RequestRecord]:
        srv, port = await serve(server.stream)
        transport = TritonTransport(Target(f"127.0.0.1:{port}", **target_kw), "m", time.perf_counter)
        await transport.open()
        try:
            transport.prepare(specs)
            return [await transport.send(s, time.perf_counter()) for s in specs]
        finally:
            await transport.close()
            await srv.stop(None)

    return asyncio.run(go())


def spec(index: int = 0, session: str = "") -> RequestSpec:
    return RequestSpec(index, "hello there", 8, 2, session_id=session)


def stream_flag(req: pb.ModelInferRequest) -> bool:
    names = [t.name for t in req.inputs]
    return req.raw_input_contents[names.index("stream")] == b"\x01"


def test_no_stream_sends_stream_false_over_model_stream_infer_and_reads_one_answer() -> None:
    server = FakeServer([answer("one two three", final=True)])
    (rec,) = run(server, {"stream": False, "count_tokens": False}, [spec()])
    assert (rec.status, rec.error) == ("OK", "")
    ((_, req),) = server.seen
    assert not stream_flag(req) and req.model_name == "m"
    assert rec.tokens_out == 3  # no num_output_tokens: the words of the whole text
    assert rec.ttft_ms == pytest.approx(rec.end_ms - rec.start_ms) and rec.itl_ms == ()
    assert rec.replica_id == UPSTREAM


@pytest.mark.parametrize(
    ("script", "got"),
    [([answer("a", final=False), answer("b", final=True)], "got 2 (a final flag)"),
     ([answer("a", final=False)], "got 1 (no final flag)"),
     ([answer("a", final=None)], "got 1 (no final flag)"),
     ([], "got 0 (no final flag)")],
    ids=["two-responses", "not-final", "no-flag", "none"],
)
def test_no_stream_anything_but_one_final_response_is_an_error(
        script: list[pb.ModelStreamInferResponse], got: str) -> None:
    (rec,) = run(FakeServer(script), {"stream": False}, [spec()])
    assert rec.status == "UNEXPECTED_RESPONSES"
    assert rec.error == f"stream=false: expected exactly one final response, {got}"


def test_stream_sends_stream_true_and_times_every_chunk() -> None:
    script = [answer("a", False, tokens=1), answer("b", False, tokens=2), answer("", True, tokens=0)]
    server = FakeServer(script)
    (rec,) = run(server, {"stream": True}, [spec()])
    assert rec.status == "OK" and rec.tokens_out == 3
    assert stream_flag(server.seen[0][1])
    assert len(rec.itl_ms) == 1 and rec.ttft_ms is not None and rec.ttft_ms < rec.end_ms - rec.start_ms
    assert rec.replica_id == UPSTREAM


def test_in_stream_error_is_stream_error_with_its_upstream() -> None:
    err = pb.ModelStreamInferResponse(error_message="boom")
    (rec,) = run(FakeServer([err]), {"stream": True}, [spec()])
    assert (rec.status, rec.error, rec.replica_id) == ("STREAM_ERROR", "boom", UPSTREAM)


def test_grpc_error_keeps_the_upstream_from_the_trailers() -> None:
    (rec,) = run(FakeServer([], abort=grpc.StatusCode.UNAVAILABLE), {"stream": True}, [spec()])
    assert (rec.status, rec.error, rec.replica_id) == ("UNAVAILABLE", "replica going away", UPSTREAM)


def test_a_stream_the_server_ends_before_reading_keeps_the_servers_status() -> None:
    """Envoy's 401 for a missing API key ends the stream before the request is read;
    every record has that status, never grpc's own INTERNAL for a write that lost the
    race with it (grpc/grpc#36066: a few in a hundred with write + done_writing)."""
    records = run(FakeServer([], abort=grpc.StatusCode.UNAUTHENTICATED), {"stream": True},
                  [spec(i) for i in range(400)])
    assert {(r.status, r.error) for r in records} == {("UNAUTHENTICATED", "replica going away")}


def test_no_envoy_in_front_means_no_replica_id() -> None:
    (rec,) = run(FakeServer([answer("x", True)], upstream=""), {"stream": False}, [spec()])
    assert rec.status == "OK" and rec.replica_id == ""


def test_configured_header_names_are_sent() -> None:
    server = FakeServer([answer("x", True)])
    run(server, {"model_header": "x-llm", "session_header": "x-conv"}, [spec(0, "s-1"), spec(1)])
    (md0, _), (md1, _) = server.seen
    assert (md0.get("x-llm"), md0.get("x-conv")) == ("m", "s-1")
    assert "x-model" not in md0 and "x-session-id" not in md0
    assert md1.get("x-llm") == "m" and "x-conv" not in md1


def test_request_metadata_defaults_and_api_key() -> None:
    t = Target("h:1", api_key="k", api_key_header="x-key")
    assert request_metadata(t, "m", "s") == (("x-model", "m"), ("x-key", "k"), ("x-session-id", "s"))
    assert request_metadata(Target("h:1"), "m") == (("x-model", "m"),)


@pytest.mark.parametrize("field_name", ["model_header", "session_header"])
def test_target_rejects_header_names_grpc_cannot_send(field_name: str) -> None:
    with pytest.raises(ValueError, match=f"{field_name}: expected lowercase"):
        Target("h:1", **{field_name: "X-Model"})


SPEC_YAML = """
default_model: alpha
models:
  - name: alpha
    engine: {model: m/alpha}
  - name: beta
    engine: {model: m/beta}
    routing: {session_header: x-conv}
envoy: {model_header: x-llm}
"""


@pytest.mark.parametrize(
    ("model", "flags", "want"),
    [("beta", (None, None), ("x-llm", "x-conv")),
     ("alpha", (None, None), ("x-llm", "x-session-id")),
     ("gamma", (None, None), ("x-llm", "x-session-id")),  # not in the spec: the default model's
     ("beta", ("x-m", None), ("x-m", "x-conv")),
     ("beta", ("x-m", "x-s"), ("x-m", "x-s"))],
    ids=["spec-model", "spec-default-session", "unknown-model", "flag-wins", "both-flags"],
)
def test_header_names_from_spec_and_flags(
        tmp_path: Path, model: str, flags: tuple[str | None, str | None], want: tuple[str, str]) -> None:
    path = tmp_path / "platform.yaml"
    path.write_text(SPEC_YAML)
    assert header_names(path, model, *flags) == want


def test_header_names_without_spec_and_bad_spec(tmp_path: Path) -> None:
    assert header_names(None, "m", None, None) == ("x-model", "x-session-id")
    assert header_names(tmp_path / "missing.yaml", "m", "a", "b") == ("a", "b")  # not read
    with pytest.raises(ValueError, match=r"--spec .*missing\.yaml: No such file"):
        header_names(tmp_path / "missing.yaml", "m", None, None)
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: []\nenvoy: {model_header: X}\n")
    with pytest.raises(ValueError, match=r"--spec .*bad\.yaml"):
        header_names(bad, "m", None, None)


def test_requests_beyond_a_connections_stream_limit_go_on_new_connections() -> None:
    """Envoy allows 1,024 streams per HTTP/2 connection by default: requests past the
    per-connection limit must not wait in the client behind one connection."""
    peers: list[str] = []

    async def stream(requests: AsyncIterator[pb.ModelInferRequest], context: Any) -> Any:
        async for _ in requests:
            peers.append(context.peer())
            await asyncio.sleep(0.05)  # all five in flight at once
            yield answer("done", final=True)

    async def go() -> tuple[list[RequestRecord], int]:
        srv, port = await serve(stream)
        target = Target(f"127.0.0.1:{port}", stream=False, count_tokens=False)
        transport = TritonTransport(target, "m", time.perf_counter, streams_per_connection=2)
        await transport.open()
        try:
            t0 = time.perf_counter()
            records = await asyncio.gather(*(transport.send(spec(i), t0) for i in range(5)))
            return list(records), transport.connections
        finally:
            await transport.close()
            await srv.stop(None)

    records, connections = asyncio.run(go())
    assert [r.status for r in records] == ["OK"] * 5
    assert connections == 3  # 2 + 2 + 1 in flight
    assert len(set(peers)) == 3, peers  # three TCP connections (distinct client ports)


def test_stream_limit_per_connection_must_be_positive() -> None:
    with pytest.raises(ValueError, match="streams_per_connection: must be >= 1, got 0"):
        TritonTransport(Target("127.0.0.1:1"), "m", time.perf_counter, streams_per_connection=0)
