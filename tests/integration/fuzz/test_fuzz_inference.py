"""Bad input: inference requests to a real replica (``tritonserver`` with the simulated
vLLM engine) and through the real Envoy in front of it (spec ``security.max_request_bytes``
= 16 KiB). Hypothesis builds raw ``ModelInferRequest``s (bad tensors, wrong datatypes
and shapes, random raw contents, oversize inputs, unknown models and versions) and
garbage bytes, each sent as the one message of a ``ModelStreamInfer`` stream (the only
inference RPC Triton serves for the decoupled vLLM model). Promise: never a crash or a
hang; every request is answered or refused clearly (an in-stream ``error_message``, or
a gRPC error with a status and message); a healthy client running all along keeps
succeeding.

Triton has no input-size limit of its own (its gRPC receive limit is INT32_MAX): a
large request reaches the model, which refuses a prompt longer than the model in-stream;
the size limit is Envoy's, from the spec.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb

from caravan.bench.wire import MODEL_STREAM_INFER, decode_stream_response
from caravan.discovery.registry_file import write_registry
from caravan.local.launch import Launcher, RunningReplica, serving_hosts, stream_request, wait_until
from caravan.local.process import free_port
from caravan.spec import PlatformSpec, parse_spec
from caravan.triton.launcher import ReplicaOptions
from caravan.xds.security import too_large_message

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MODEL = "alpha"
MAX_BYTES = 16 * 1024  # Envoy's request size limit (spec security.max_request_bytes)
# gRPC errors a refusal may be: bad request, unknown model (Envoy's unknown-model
# route: UNIMPLEMENTED), Envoy's size limit (UNKNOWN with its message, or INTERNAL when
# the client reads Envoy's reset of the stream first).
REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


@dataclass
class Stack:
    spec: PlatformSpec
    replica: RunningReplica

    @property
    def envoy(self) -> str:
        return f"127.0.0.1:{self.spec.envoy.listen_port}"


@pytest.fixture(scope="module")
def stack(module_launcher: Launcher, fast_replica: ReplicaOptions) -> Stack:
    tmp = module_launcher.state_dir
    spec = parse_spec({
        "models": [{"name": MODEL, "engine": {"model": "m/alpha"},
                    "routing": {"maglev_table_size": 1031}}],
        "envoy": {"listen_port": free_port(), "admin_port": free_port()},
        "control_plane": {"xds_port": free_port(), "admin_port": free_port(),
                          "debounce_quiet_ms": 20, "debounce_max_ms": 200},
        "security": {"max_request_bytes": MAX_BYTES},
    })
    spec_path = tmp / "platform.yaml"
    spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    replica = module_launcher.replica(f"{MODEL}-0", MODEL, fast_replica)
    write_registry(tmp / "registry.json", [replica.registration()])
    cp = spec.control_plane
    module_launcher.control_plane(spec_path, port=cp.xds_port, admin_port=cp.admin_port,
                                  registry=tmp / "registry.json")
    module_launcher.envoy(spec, [("127.0.0.1", cp.xds_port)], node_id="fuzz-envoy")
    s = Stack(spec, replica)
    wait_until(lambda: serving_hosts(spec.envoy.admin_port, f"model-{MODEL}") == {replica.endpoint},
               30, "Envoy serving the replica")
    wait_until(lambda: stream_request(s.envoy, MODEL, {"x-model": MODEL}).ok, 30, "a request through Envoy")
    return s


@dataclass
class Healthy:
    """A well-behaved client through Envoy for the whole module, in a thread."""

    url: str
    results: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        deadline = time.monotonic() + 200
        with grpc.insecure_channel(self.url) as ch:
            while not self.stop.is_set() and time.monotonic() < deadline:
                reply = stream_request(self.url, MODEL, {"x-model": MODEL}, channel=ch)
                self.results.append("OK" if reply.ok else f"{reply.outcome}: {reply.message}")
                self.stop.wait(0.02)


@pytest.fixture(scope="module")
def healthy(stack: Stack) -> Iterator[Healthy]:
    h = Healthy(stack.envoy)
    thread = threading.Thread(target=h.run, name="healthy-client", daemon=True)
    thread.start()
    yield h
    h.stop.set()
    thread.join(15)
    failed = [r for r in h.results if r != "OK"]
    assert len(h.results) >= 20 and failed == [], failed[:3]
    assert stack.replica.proc.alive(), "the replica must survive the fuzz"


@pytest.fixture(scope="module", params=["replica", "envoy"])
def target(request: pytest.FixtureRequest, stack: Stack, healthy: Healthy
           ) -> Iterator[tuple[str, grpc.Channel]]:
    ep = stack.envoy if request.param == "envoy" else stack.replica.endpoint
    with grpc.insecure_channel(ep) as ch:
        yield request.param, ch


def send(channel: grpc.Channel, message: bytes, timeout_s: float = 5) -> tuple[list[Any], grpc.RpcError | None]:
    """``message`` as the one message of a ModelStreamInfer stream, half-closed; (every
    response, the stream's error or None)."""
    rpc = channel.stream_stream(MODEL_STREAM_INFER, request_serializer=lambda b: b,
                                response_deserializer=decode_stream_response)
    out: list[Any] = []
    try:
        for resp in rpc(iter((message,)), metadata=[("x-model", MODEL)], timeout=timeout_s):
            out.append(resp)
    except grpc.RpcError as err:
        return out, err
    return out, None


def final(resp: Any) -> bool:
    flag = resp.infer_response.parameters.get("triton_final_response")
    return flag is not None and bool(flag.bool_param)


datatypes = st.sampled_from(["BYTES", "BOOL", "INT32", "FP32", "UINT8", "", "NOPE"])
names = st.sampled_from(["text_input", "stream", "sampling_parameters",
                         "exclude_input_in_output", "bogus", ""])
shapes = st.lists(st.integers(-2, 5), max_size=3)
tensor = st.builds(lambda n, d, s: pb.ModelInferRequest.InferInputTensor(
    name=n, datatype=d, shape=s), names, datatypes, shapes)
contents = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=5, max_size=40).map(lambda b: len(b).to_bytes(4, "little") + b),
    st.just((MAX_BYTES + 10).to_bytes(4, "little") + b"x" * (MAX_BYTES + 10)),  # above Envoy's limit
    st.just(b'\x10\x00\x00\x00{"max_tokens": -3}'),
)
infer_requests = st.builds(
    lambda model, version, inputs, raw, rid: pb.ModelInferRequest(
        model_name=model, model_version=version, id=rid, inputs=inputs,
        raw_input_contents=raw),
    st.one_of(st.just(MODEL), st.text(max_size=10)), st.sampled_from(["", "1", "7", "x"]),
    st.lists(tensor, max_size=4), st.lists(contents, max_size=4), st.text(max_size=8))


@settings(max_examples=120, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(req=infer_requests)
def test_bad_infer_requests_get_clear_errors(target: tuple[str, grpc.Channel],
                                             req: pb.ModelInferRequest) -> None:
    """Bad tensors, datatypes, shapes, contents, models, versions: within 5 s, an
    in-stream error naming the problem, a final answer (the request was valid), or a
    gRPC refusal with a message; never a crash or hang."""
    _, channel = target
    responses, err = send(channel, req.SerializeToString())
    if err is not None:
        assert err.code() in REFUSALS, (err.code(), err.details())
        assert err.details(), "a refusal names its reason"
        return
    errors = [r.error_message for r in responses if r.error_message]
    assert errors or any(final(r) for r in responses), responses


@settings(max_examples=40, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=300))
def test_garbage_bytes_end_the_stream_at_once(target: tuple[str, grpc.Channel], blob: bytes) -> None:
    """Garbage bytes as the ModelStreamInfer message: the stream ends within 5 s, never a
    hang or crash. Bytes that decode to a (bad) request get the usual in-stream error;
    bytes Triton cannot parse get no response at all (the stream ends OK, empty)."""
    _, channel = target
    responses, err = send(channel, blob)
    if err is not None:
        assert err.code() in REFUSALS, (err.code(), err.details())
        return
    assert all(r.error_message or final(r) for r in responses), responses


def _text_request(size: int, word: bytes = b"y ") -> bytes:
    """A request whose prompt is ``size`` bytes of ``word`` (one simulated token each)."""
    text = word * (size // len(word))
    req = pb.ModelInferRequest(model_name=MODEL, inputs=[pb.ModelInferRequest.InferInputTensor(
        name="text_input", datatype="BYTES", shape=[1])],
        raw_input_contents=[len(text).to_bytes(4, "little") + text])
    return req.SerializeToString()


def test_oversize_request_refused_by_envoy_answered_by_triton(target: tuple[str, grpc.Channel]) -> None:
    """A request above the spec's ``max_request_bytes``: Envoy refuses it with its size
    message (or resets the stream); straight at the replica there is no size limit, and
    the model refuses the over-long prompt in-stream."""
    name, channel = target
    responses, err = send(channel, _text_request(4 * MAX_BYTES), timeout_s=10)
    if name == "envoy":
        assert err is not None, responses
        got = (err.code(), err.details() or "")
        assert got == (grpc.StatusCode.UNKNOWN, too_large_message(MAX_BYTES)) or (
            got[0] is grpc.StatusCode.INTERNAL and "RST_STREAM" in got[1]), got
    else:
        assert err is None, (err.code(), err.details())
        assert [r.error_message for r in responses] == [
            "Error generating stream: The decoder prompt (length 32768) is longer than the maximum "
            "model length of 4096."], responses


def test_request_below_the_limit_is_served(target: tuple[str, grpc.Channel]) -> None:
    """A request just below Envoy's limit is served the same way through Envoy and straight."""
    _, channel = target
    responses, err = send(channel, _text_request(MAX_BYTES // 2, b"abcdefghijklmno "), timeout_s=10)
    assert err is None and responses and all(not r.error_message for r in responses), responses
    assert final(responses[-1])


def test_module_leaves_the_replica_serving(stack: Stack, tmp_path: Path) -> None:
    """Runs last (file order): after the fuzz the replica still answers straight and
    through Envoy."""
    assert stream_request(stack.replica.endpoint, MODEL).ok
    assert stream_request(stack.envoy, MODEL, {"x-model": MODEL}).ok
