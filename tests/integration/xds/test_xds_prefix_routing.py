"""``routing.policy: prefix`` through the real Envoy to real tritonserver replicas.

Stack (127.0.0.1, free ports): three replicas of ``llm`` (real tritonserver, simulated
engine with prefix caching) -> in-process control plane -> real Envoy, which derives the
prefix key from the first message of each stream (``caravan.xds.routing``). The same
three replicas are also registered as model ``rr`` (``round_robin``): a request with
``x-model: rr`` and ``llm`` in its body reaches them without the prefix filters.
Which replica served a request is Envoy's ``x-caravan-upstream``.
"""

from __future__ import annotations

import queue
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import grpc
import pytest
from tritonclient.grpc import service_pb2 as pb
from xds_envoy_harness import BackgroundControlPlane, wait_until

from caravan.bench.answer import upstream_host
from caravan.bench.wire import MODEL_INFER, MODEL_STREAM_INFER, encode_request, request_tensors
from caravan.discovery.registry_file import write_registry
from caravan.local.launch import Launcher, RunningReplica, serving_hosts, stream_request
from caravan.local.process import free_port
from caravan.spec import PlatformSpec, parse_spec
from caravan.triton.launcher import ReplicaOptions

pytestmark = pytest.mark.integration

MODEL = "llm"
PREFIX_TOKENS = 32
DOC = " ".join(f"clause{i} of the shared contract text" for i in range(40))  # 240 words


@dataclass
class Stack:
    spec: PlatformSpec
    replicas: list[RunningReplica]

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.spec.envoy.listen_port}"

    @property
    def endpoints(self) -> set[str]:
        return {r.endpoint for r in self.replicas}

    def by_endpoint(self, endpoint: str) -> RunningReplica:
        return next(r for r in self.replicas if r.endpoint == endpoint)


def _spec() -> PlatformSpec:
    routing = {"maglev_table_size": 1031, "retries": 0}
    return parse_spec({
        "default_model": MODEL,
        "models": [
            {"name": MODEL, "engine": {"model": "m"},
             "routing": {**routing, "policy": "prefix", "prefix_tokens": PREFIX_TOKENS}},
            {"name": "rr", "engine": {"model": "m"}, "routing": {**routing, "policy": "round_robin"}},
        ],
        "envoy": {"listen_port": free_port(), "admin_port": free_port()},
        "control_plane": {"debounce_quiet_ms": 20, "debounce_max_ms": 200},
    })


@pytest.fixture(scope="module")
def stack(module_launcher: Launcher, fast_replica: ReplicaOptions) -> Iterator[Stack]:
    spec = _spec()
    replicas = module_launcher.replicas(["r0", "r1", "r2"], MODEL, fast_replica)
    regs = [r.registration() for r in replicas]
    registry = module_launcher.state_dir / "registry.json"
    write_registry(registry, regs + [replace(reg, id=f"rr-{reg.id}", model="rr") for reg in regs])
    cp = BackgroundControlPlane(spec, registry)
    try:
        module_launcher.envoy(spec, [("127.0.0.1", cp.cp.port)], node_id="prefix-envoy")
        s = Stack(spec, replicas)
        for cluster in ("model-llm", "model-rr"):
            wait_until(lambda c=cluster: serving_hosts(spec.envoy.admin_port, c) == s.endpoints,
                       20, f"{cluster} healthy in Envoy")
        yield s
    finally:
        cp.stop()


def _hits(replica: RunningReplica) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{replica.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(r'^vllm:prefix_cache_hits_total\{[^}]*\} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def _ask(stack: Stack, prompt: str, headers: dict[str, str] | None = None) -> str:
    reply = stream_request(stack.url, MODEL, headers or {}, prompt=prompt, max_tokens=2)
    assert reply.ok, reply.message
    return reply.upstream


def test_two_users_with_the_same_long_prefix_share_a_replica_and_its_cache(stack: Stack) -> None:
    first = _ask(stack, DOC + " question from user one: what is clause 3?")
    replica = stack.by_endpoint(first)
    before = _hits(replica)
    second = _ask(stack, DOC + " a different user asks about clause 17 instead")
    assert second == first
    assert _hits(replica) - before >= 224, "the second user's prompt reuses the cached document blocks"


def test_one_prefix_with_six_different_endings_stays_on_one_replica(stack: Stack) -> None:
    # without the key header reaching the router's hash: 3 replicas, (1/3)^5 by chance;
    # half name the model in the model header, half reach it as the default model
    served = {_ask(stack, f"{DOC} then question {i}?", {"x-model": MODEL} if i % 2 else None)
              for i in range(6)}
    assert len(served) == 1, served


def test_different_prefixes_spread_over_the_replicas(stack: Stack) -> None:
    served = {_ask(stack, f"document {i} " + DOC) for i in range(12)}
    assert len(served) >= 2, served


def test_the_session_header_still_wins(stack: Stack) -> None:
    spread = {_ask(stack, DOC, {"x-session-id": f"s-{i}"}) for i in range(12)}
    assert len(spread) >= 2, "one prompt under 12 sessions should reach several replicas"
    pinned = {_ask(stack, f"topic {i} " + DOC, {"x-session-id": "one-session"}) for i in range(6)}
    assert len(pinned) == 1, pinned


def _raw_stream(stack: Stack, messages: list[bytes], **kw: Any) -> tuple[str, str]:
    """Send raw request messages on one ModelStreamInfer stream; (status name, upstream)."""
    with grpc.insecure_channel(stack.url) as ch:
        call = ch.stream_stream(MODEL_STREAM_INFER)(iter(messages), timeout=10, **kw)
        try:
            for _ in call:
                pass
            return "OK", upstream_host(call.initial_metadata()) or upstream_host(call.trailing_metadata())
        except grpc.RpcError as err:
            e: Any = err
            return (f"{e.code().name}: {e.details()}",
                    upstream_host(e.initial_metadata()) or upstream_host(e.trailing_metadata()))


@pytest.mark.parametrize("body", [
    b"\xff\xff\xff\xff\x0fnot a protobuf",
    pb.ModelInferRequest(model_name=MODEL, id="no-text").SerializeToString(),
    pb.ModelInferRequest(model_name=MODEL, inputs=[pb.ModelInferRequest.InferInputTensor(
        name="text_input", datatype="BYTES", shape=[1])], raw_input_contents=[b"\x01"]).SerializeToString(),
    encode_request(MODEL, "cut", DOC, 2, stream=False, count_tokens=False)[:-3],
], ids=["garbage", "no-text-input", "short-raw-element", "truncated-protobuf"])
def test_a_malformed_body_reaches_a_replica_without_a_key(stack: Stack, body: bytes) -> None:
    status, upstream = _raw_stream(stack, [body])
    assert upstream in stack.endpoints, f"Envoy answered itself ({status}): the request must be forwarded"


def test_a_stream_closed_before_its_first_message_reaches_a_replica(stack: Stack) -> None:
    # The key filter lets a stream that ends before one whole message go on without a
    # key: the replica answers it (an empty stream: OK), as it would without Caravan.
    status, upstream = _raw_stream(stack, [])
    assert (status, upstream in stack.endpoints) == ("OK", True)


def test_a_compressed_stream_skips_the_key_and_is_served(stack: Stack) -> None:
    request = encode_request(MODEL, "gz", DOC, 2, stream=False, count_tokens=False)
    status, upstream = _raw_stream(stack, [request], compression=grpc.Compression.Gzip)
    assert status == "OK" and upstream in stack.endpoints


def test_a_stream_kept_open_serves_several_requests(stack: Stack) -> None:
    first_alone = _ask(stack, "open stream " + DOC)
    outbox: queue.Queue[bytes | None] = queue.Queue()

    def requests() -> Iterator[bytes]:
        while (item := outbox.get(timeout=10)) is not None:
            yield item

    with grpc.insecure_channel(stack.url) as ch:
        call = ch.stream_stream(MODEL_STREAM_INFER, response_deserializer=pb.ModelStreamInferResponse.FromString)(
            requests(), timeout=20)
        finals = []
        for i in range(4):  # each sent only after the previous one's final answer
            outbox.put(encode_request(MODEL, f"turn-{i}", f"open stream {DOC} turn {i}", 2, stream=False,
                                      count_tokens=False))
            response = next(call)
            assert not response.error_message, response.error_message
            finals.append(response.infer_response.id)
        outbox.put(None)
        assert list(call) == []
        assert upstream_host(call.initial_metadata()) == first_alone
    assert finals == [f"turn-{i}" for i in range(4)]


def test_a_prompt_over_16_kib_is_keyed_by_its_first_words(stack: Stack) -> None:
    head = f"long prompt {DOC}"
    short = _ask(stack, head)
    long_prompt = head + " " + " ".join(f"filler{i}" for i in range(3000))
    assert len(long_prompt.encode()) > 16 * 1024
    assert _ask(stack, long_prompt) == short


def test_a_prompt_behind_20_kib_of_other_input_is_keyed_across_frames(stack: Stack) -> None:
    # text_input's bytes start past the first 16 KiB frame: the filter must buffer across
    # body callbacks. (The replica refuses the unknown input; its reply names it.)
    for i in range(3):
        prompt = f"behind padding {i} {DOC}"
        expected = _ask(stack, prompt)
        tensors = request_tensors(prompt, 2, False, False, {})
        req = pb.ModelInferRequest(model_name=MODEL, id=f"padded-{i}")
        req.inputs.add(name="padding", datatype="BYTES", shape=[1])
        req.raw_input_contents.append(b"\0" * (20 * 1024))
        for name, dtype, raw in tensors:
            req.inputs.add(name=name, datatype=dtype, shape=[1])
            req.raw_input_contents.append(raw)
        status, upstream = _raw_stream(stack, [req.SerializeToString()])
        assert upstream == expected, status


def test_typed_bytes_contents_are_keyed_like_raw_contents(stack: Stack) -> None:
    prompt = f"typed contents {DOC}"
    raw_upstream = _ask(stack, prompt)
    req = pb.ModelInferRequest(model_name=MODEL, id="typed")
    for name, dtype, raw in request_tensors(prompt, 2, False, False, {}):
        t = req.inputs.add(name=name, datatype=dtype, shape=[1])
        if dtype == "BYTES":
            t.contents.bytes_contents.append(raw[4:])
        else:
            t.contents.bool_contents.append(raw == b"\x01")
    for order in (req, _reversed_inputs(req)):
        status, upstream = _raw_stream(stack, [order.SerializeToString()])
        assert (status, upstream) == ("OK", raw_upstream)


def _reversed_inputs(req: pb.ModelInferRequest) -> pb.ModelInferRequest:
    out = pb.ModelInferRequest(model_name=req.model_name, id=req.id)
    out.inputs.extend(reversed(req.inputs))
    return out


def test_model_infer_is_keyed_too(stack: Stack) -> None:
    prompt = f"unary {DOC}"
    expected = _ask(stack, prompt)
    request = encode_request(MODEL, "unary", prompt, 2, stream=False, count_tokens=False)
    with grpc.insecure_channel(stack.url) as ch, pytest.raises(grpc.RpcError) as err:
        ch.unary_unary(MODEL_INFER)(request, timeout=10)
    e: Any = err.value
    assert e.code() == grpc.StatusCode.UNIMPLEMENTED, "a decoupled model refuses ModelInfer"
    assert (upstream_host(e.initial_metadata()) or upstream_host(e.trailing_metadata())) == expected


def test_round_robin_model_spreads_one_prompt_over_every_replica(stack: Stack) -> None:
    served = {stream_request(stack.url, MODEL, {"x-model": "rr"}, prompt=DOC, max_tokens=2).upstream
              for _ in range(6)}
    assert served == stack.endpoints
