"""Bad input: inference requests to a real replica (``--max-input-bytes 4096``) and
through the real Envoy in front of it. Hypothesis builds raw ``ModelInferRequest``s
(bad tensors, wrong datatypes and shapes, random raw contents, oversize inputs,
unknown models and versions) and garbage bytes as the gRPC message. Promise: never a
crash or a hang; every refusal is a gRPC error with a clear status and message; a
healthy client running all along keeps succeeding."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

FAULTS = Path(__file__).resolve().parents[2] / "e2e" / "faults"
if str(FAULTS) not in sys.path:
    sys.path.insert(0, str(FAULTS))

from faults_load import UnaryLoad  # noqa: E402
from faults_stack import MODEL, ManualStack  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MAX_INPUT = 4096
INFER = "/inference.GRPCInferenceService/ModelInfer"
# What a refusal may be: bad request, unknown model (replica: NOT_FOUND; Envoy's
# unknown-model route: UNIMPLEMENTED), message above gRPC's receive limit.
REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.RESOURCE_EXHAUSTED}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManualStack]:
    s = ManualStack(tmp_path_factory.mktemp("fuzz-infer"), replicas=1,
                    replica_args=("--max-input-bytes", str(MAX_INPUT))).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def healthy(stack: ManualStack) -> Iterator[UnaryLoad]:
    """A well-behaved client through Envoy for the whole module."""
    load = UnaryLoad(stack.endpoint, MODEL, workers=1, max_s=200, pause_s=0.02).start()
    yield load
    results = load.stop()
    failed = [r for r in results if not r.ok]
    assert len(results) >= 20 and failed == [], failed[:3]


@pytest.fixture(scope="module", params=["replica", "envoy"])
def target(request: pytest.FixtureRequest, stack: ManualStack, healthy: UnaryLoad
           ) -> Iterator[tuple[str, grpc.Channel]]:
    ep = (stack.endpoint if request.param == "envoy"
          else next(iter(stack.registered.values())).endpoint)
    with grpc.insecure_channel(ep) as ch:
        yield request.param, ch


datatypes = st.sampled_from(["BYTES", "BOOL", "INT32", "FP32", "UINT8", "", "NOPE"])
names = st.sampled_from(["text_input", "stream", "sampling_parameters",
                         "exclude_input_in_output", "bogus", ""])
shapes = st.lists(st.integers(-2, 5), max_size=3)
tensor = st.builds(lambda n, d, s: pb.ModelInferRequest.InferInputTensor(
    name=n, datatype=d, shape=s), names, datatypes, shapes)
contents = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=5, max_size=40).map(lambda b: len(b).to_bytes(4, "little") + b),
    st.just((MAX_INPUT + 10).to_bytes(4, "little") + b"x" * (MAX_INPUT + 10)),  # oversize
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
    """Bad tensors, datatypes, shapes, contents, models, versions: a clear gRPC
    refusal within 5 s, never a crash or hang."""
    _, channel = target
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    try:
        stub.ModelInfer(req, metadata=[("x-model", MODEL)], timeout=5)
    except grpc.RpcError as err:
        assert err.code() in REFUSALS, (err.code(), err.details())
        assert err.details(), "a refusal names its reason"


@settings(max_examples=40, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=300))
def test_garbage_bytes_get_a_grpc_error(target: tuple[str, grpc.Channel], blob: bytes) -> None:
    """Garbage bytes as the ModelInfer message: a gRPC error naming the problem."""
    _, channel = target
    call = channel.unary_unary(INFER, request_serializer=lambda b: b,
                               response_deserializer=lambda b: b)
    try:
        call(blob, metadata=[("x-model", MODEL)], timeout=5)
    except grpc.RpcError as err:
        # Bytes that decode to a (bad) request get the normal refusals; undecodable ones
        # fail in grpc.aio's deserializer, which answers UNKNOWN naming the parse error.
        if err.code() is grpc.StatusCode.UNKNOWN:
            assert "Error parsing message" in (err.details() or ""), err.details()
        else:
            assert err.code() in REFUSALS, (err.code(), err.details())


def test_oversize_input_is_refused_by_name(target: tuple[str, grpc.Channel]) -> None:
    """An input above --max-input-bytes: INVALID_ARGUMENT naming text_input."""
    _, channel = target
    text = b"y" * (MAX_INPUT * 2)
    req = pb.ModelInferRequest(model_name=MODEL, inputs=[pb.ModelInferRequest.InferInputTensor(
        name="text_input", datatype="BYTES", shape=[1])],
        raw_input_contents=[len(text).to_bytes(4, "little") + text])
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            req, metadata=[("x-model", MODEL)], timeout=5)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "text_input" in info.value.details(), info.value.details()


def test_message_above_grpc_limit_is_resource_exhausted(target: tuple[str, grpc.Channel]
                                                        ) -> None:
    """A message above the replica's gRPC receive limit: RESOURCE_EXHAUSTED."""
    _, channel = target
    text = b"z" * (MAX_INPUT + (2 << 20))  # above the replica's receive limit
    req = pb.ModelInferRequest(model_name=MODEL, inputs=[pb.ModelInferRequest.InferInputTensor(
        name="text_input", datatype="BYTES", shape=[1])],
        raw_input_contents=[len(text).to_bytes(4, "little") + text])
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            req, metadata=[("x-model", MODEL)], timeout=10)
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
