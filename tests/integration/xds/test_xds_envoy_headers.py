"""Real Envoy with non-default header names, streams only, as production clients send.

Stack (127.0.0.1, free ports): stub replicas that behave like Triton with a decoupled
model (xds_stub_replica.py: streams only, ModelInfer UNIMPLEMENTED, nothing in the
answers naming the replica) -> in-process control plane -> real Envoy. The spec sets
``envoy.model_header: x-llm`` and alpha's ``routing.session_header: x-conv``; every
client Caravan ships (``caravan bench``, the readiness probe) must use those names and
learn the replica from Envoy's ``x-caravan-upstream`` response header.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from xds_envoy_harness import (
    BackgroundControlPlane,
    ChildProcess,
    admin_get,
    healthy_hosts,
    start_envoy,
    start_stub,
    stream_infer,
    wait_until,
)

from caravan.bench.answer import upstream_host
from caravan.bench.arrivals import Limits, LoadLevel, Shape
from caravan.bench.dataset import Lengths, Workload
from caravan.bench.runner import run_sweep
from caravan.bench.triton import Target
from caravan.bench.wire import MODEL_INFER, encode_request
from caravan.discovery.registry_file import write_registry
from caravan.discovery.types import Replica
from caravan.local.health import infer_once
from caravan.local.process import caravan_argv, free_port
from caravan.spec import PlatformSpec, parse_spec

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "stream_client.py"
REPLICAS = {"alpha": ["alpha-0", "alpha-1"], "beta": ["beta-0"], "gamma": ["gamma-ok", "gamma-bad"]}


def _spec_data() -> dict[str, Any]:
    return {
        "default_model": "alpha",
        "models": [
            {"name": "alpha", "engine": {"model": "m/alpha"},
             "routing": {"maglev_table_size": 1031, "session_header": "x-conv"}},
            {"name": "beta", "engine": {"model": "m/beta"}, "routing": {"maglev_table_size": 1031}},
            {"name": "gamma", "engine": {"model": "m/gamma"},
             "routing": {"maglev_table_size": 1031, "retries": 2, "hash_balance_factor": None}},
        ],
        "envoy": {"listen_port": free_port(), "admin_port": free_port(), "model_header": "x-llm"},
        "control_plane": {"debounce_quiet_ms": 20, "debounce_max_ms": 200},
    }


@dataclass
class Stack:
    spec_data: dict[str, Any]
    spec: PlatformSpec
    endpoints: dict[str, str]  # replica id -> host:port

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.spec.envoy.listen_port}"

    def of(self, model: str) -> set[str]:
        """The endpoints of ``model``'s replicas."""
        return {self.endpoints[i] for i in REPLICAS[model]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("xds-headers")
    data = _spec_data()
    spec = parse_spec(data)
    procs: list[ChildProcess] = []
    replicas: list[Replica] = []
    cp = envoy = None
    try:
        for model, ids in REPLICAS.items():
            for rid in ids:
                proc, port = start_stub(tmp, rid, model, *(["--fail-streams"] if rid == "gamma-bad" else []))
                procs.append(proc)
                replicas.append(Replica(rid, model, "127.0.0.1", port))
        registry = tmp / "registry.json"
        write_registry(registry, replicas)
        cp = BackgroundControlPlane(spec, registry)
        envoy = start_envoy(tmp, spec, [("127.0.0.1", cp.cp.port)], "headers-envoy")
        s = Stack(data, spec, {r.id: r.endpoint for r in replicas})
        for model in REPLICAS:
            wait_until(lambda m=model: healthy_hosts(spec.envoy.admin_port, f"model-{m}") == s.of(m),
                       20, f"model-{model} healthy")
        yield s
    finally:
        if envoy is not None:
            envoy.stop()
        if cp is not None:
            cp.stop()
        for p in procs:
            p.stop()


def test_upstream_header_arrives_on_a_stream(stack: Stack) -> None:
    reply = stream_infer(stack.url, "beta", {"x-llm": "beta"}, stream=True)
    assert reply.upstream == stack.endpoints["beta-0"]
    assert reply.finals == [False, False, True]
    assert reply.text == "tok0 tok1 tok2 "


def test_stream_false_is_one_final_response_with_the_whole_text(stack: Stack) -> None:
    reply = stream_infer(stack.url, "beta", {"x-llm": "beta"}, stream=False)
    assert reply.finals == [True] and reply.text == "hello from beta-0"
    assert reply.upstream == stack.endpoints["beta-0"]


@pytest.mark.parametrize(
    ("headers", "model"),
    [({"x-llm": "beta"}, "beta"), ({"x-llm": "alpha"}, "alpha"), ({}, "alpha"), ({"x-model": "beta"}, "alpha")],
    ids=["x-llm-beta", "x-llm-alpha", "no-header-default", "default-name-means-nothing-here"],
)
def test_the_configured_model_header_routes(stack: Stack, headers: dict[str, str], model: str) -> None:
    # The request names ``beta`` whatever the header, so a misrouted request would show
    # as the other model's upstream (and an in-stream unknown-model error).
    served = {stream_infer(stack.url, "beta", headers).upstream for _ in range(6)}
    assert served <= stack.of(model)


def test_unknown_model_in_the_configured_header_is_refused(stack: Stack) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stream_infer(stack.url, "nope", {"x-llm": "nope"})
    e: Any = err.value
    assert e.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "unknown model in header x-llm" in e.details()
    assert upstream_host(e.trailing_metadata()) == "", "Envoy's own reply names no replica"


def test_the_configured_session_header_pins_a_session_to_one_replica(stack: Stack) -> None:
    for session in ("s-a", "s-b", "s-c"):
        served = {stream_infer(stack.url, "alpha", {"x-llm": "alpha", "x-conv": session}).upstream
                  for _ in range(4)}
        assert len(served) == 1, f"session {session} was spread over {served}"
    spread = {stream_infer(stack.url, "alpha", {"x-llm": "alpha", "x-conv": f"spread-{i}"}).upstream
              for i in range(16)}
    assert spread == stack.of("alpha"), "16 sessions should reach both alpha replicas"


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_bench_attributes_each_request_to_its_upstream(stack: Stack, stream: bool) -> None:
    target = Target(stack.url, stream=stream, timeout_s=10, count_tokens=False,
                    model_header="x-llm", session_header="x-conv")
    level = LoadLevel(Shape.CONCURRENCY, 4, Limits(12))
    workload = Workload(seed=3, input=Lengths(5), output=Lengths(4), turns=3)
    (lv,) = asyncio.run(run_sweep(target, "alpha", [level], workload)).levels
    assert {r.status for r in lv.records} == {"OK"}, [r.error for r in lv.records if not r.ok]
    assert {r.replica_id for r in lv.records} <= stack.of("alpha")
    for sid in {r.session_id for r in lv.records}:
        served = {r.replica_id for r in lv.records if r.session_id == sid}
        assert len(served) == 1, f"session {sid}: turns served by {served}"


def test_bench_cli_takes_header_names_from_the_spec(stack: Stack, tmp_path: Path) -> None:
    spec_file = tmp_path / "platform.yaml"
    spec_file.write_text(yaml.safe_dump(stack.spec_data))
    out = tmp_path / "run"
    proc = subprocess.run(
        caravan_argv("bench", "--url", stack.url, "--model", "beta", "--spec", str(spec_file), "--no-stream",
                     "--requests", "4", "--no-count-tokens", "--no-progress", "--no-plot", "--out", str(out)),
        capture_output=True, text=True, timeout=90, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((out / "bench.json").read_text())
    assert (data["meta"]["model_header"], data["meta"]["session_header"]) == ("x-llm", "x-session-id")
    (lv,) = data["levels"]
    assert {(r["status"], r["replica_id"]) for r in lv["records"]} == {("OK", stack.endpoints["beta-0"])}


def test_example_client_uses_the_specs_header_names(stack: Stack, tmp_path: Path) -> None:
    spec_file = tmp_path / "platform.yaml"
    spec_file.write_text(yaml.safe_dump(stack.spec_data))
    proc = subprocess.run([sys.executable, str(EXAMPLE), stack.url, "beta", "--spec", str(spec_file)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"tok0 tok1 tok2 \n(served by replica {stack.endpoints['beta-0']})\n"


def test_readiness_probe_uses_the_configured_header(stack: Stack) -> None:
    assert infer_once(stack.url, "beta", 5, model_header="x-llm")
    assert not infer_once(stack.url, "nope", 5, model_header="x-llm")  # refused by Envoy
    # "x-model: beta" is no routing header here: the default model's replica answers
    # "unknown model" in-stream, so the probe fails
    assert not infer_once(stack.url, "beta", 5)


def test_unary_model_infer_gets_the_replicas_unimplemented(stack: Stack) -> None:
    """What a unary client sees through Envoy: the replica's UNIMPLEMENTED, not retried."""
    request = encode_request("beta", "u-1", "hi", 4, stream=False, count_tokens=False)
    with grpc.insecure_channel(stack.url) as channel, pytest.raises(grpc.RpcError) as err:
        channel.unary_unary(MODEL_INFER)(request, metadata=(("x-llm", "beta"),), timeout=10)
    e: Any = err.value
    assert e.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "decoupled transaction policy" in e.details()
    # a headers-only error reply: gRPC hands Envoy's header over with the trailers
    assert upstream_host(e.initial_metadata()) == ""
    assert upstream_host(e.trailing_metadata()) == stack.endpoints["beta-0"]


def _stat(admin_port: int, name: str) -> int:
    for line in admin_get(admin_port, f"/stats?filter=^{name}$").splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return 0


def test_a_stream_failing_before_headers_is_retried_on_another_replica(stack: Stack) -> None:
    replies = [stream_infer(stack.url, "gamma", {"x-llm": "gamma", "x-session-id": f"r-{i}"}, stream=True)
               for i in range(16)]
    assert {r.upstream for r in replies} == {stack.endpoints["gamma-ok"]}
    assert all(r.finals == [False, False, True] for r in replies)
    assert _stat(stack.spec.envoy.admin_port, "cluster.model-gamma.upstream_rq_retry") > 0
