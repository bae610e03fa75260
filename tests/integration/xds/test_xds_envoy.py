"""The control plane driving a real Envoy, with streamed requests (ModelStreamInfer).

Stack (all on 127.0.0.1, free ports): ``caravan replica`` processes (3 of ``alpha``,
1 of ``beta``) registered in a local registry file -> in-process control plane -> real
Envoy (rendered bootstrap) -> clients: raw gRPC streams (``stream_infer``) and
tritonclient's own stream API. Which replica served a request comes from Envoy's
``x-caravan-upstream`` response header, mapped back to the replica id.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
from xds_envoy_harness import (
    BackgroundControlPlane,
    ChildProcess,
    cluster_hosts,
    healthy_hosts,
    start_envoy,
    start_replica,
    stream_infer,
    wait_until,
)

from caravan.discovery.registry_file import write_registry
from caravan.discovery.types import Replica
from caravan.local.process import free_port
from caravan.spec import PlatformSpec, parse_spec
from caravan.xds.resources import pack
from caravan.xds.snapshot import CLUSTER, Snapshot, VersionedResource, resource_version

pytestmark = pytest.mark.integration

ALPHA = ["alpha-0", "alpha-1", "alpha-2"]
BETA = ["beta-0"]


@dataclass
class Stack:
    tmp: Path
    spec: PlatformSpec
    registry: Path
    cp: BackgroundControlPlane
    envoy: ChildProcess
    replicas: dict[str, Replica] = field(default_factory=dict)
    procs: list[ChildProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.spec.envoy.listen_port}"

    @property
    def admin(self) -> int:
        return self.spec.envoy.admin_port

    def publish(self, ids: list[str]) -> None:
        write_registry(self.registry, [self.replicas[i] for i in ids])

    def wait_hosts(self, cluster: str, ids: list[str]) -> None:
        want = {self.replicas[i].endpoint for i in ids}
        wait_until(
            lambda: (
                healthy_hosts(self.admin, cluster) == want
                and set(cluster_hosts(self.admin).get(cluster, {})) == want
            ),
            20,
            f"{cluster} hosts == {sorted(ids)}",
        )


def _spec() -> PlatformSpec:
    return parse_spec(
        {
            "default_model": "alpha",
            "models": [
                {
                    "name": "alpha",
                    "engine": {"model": "m/alpha"},
                    "routing": {"maglev_table_size": 1031, "unary_timeout_s": 10, "retries": 1},
                },
                {
                    "name": "beta",
                    "engine": {"model": "m/beta"},
                    "routing": {"maglev_table_size": 1031},
                },
            ],
            "envoy": {"listen_port": free_port(), "admin_port": free_port()},
            "control_plane": {
                "xds_port": free_port(),
                "admin_port": free_port(),
                "debounce_quiet_ms": 20,
                "debounce_max_ms": 200,
            },
        }
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("xds-envoy")
    spec = _spec()
    procs: list[ChildProcess] = []
    replicas: dict[str, Replica] = {}
    cp = envoy = None
    try:
        for model, ids in (("alpha", ALPHA), ("beta", BETA)):
            for rid in ids:
                proc, port = start_replica(tmp, rid, model)
                procs.append(proc)
                replicas[rid] = Replica(rid, model, "127.0.0.1", port)
        registry = tmp / "registry.json"
        write_registry(registry, replicas.values())
        cp = BackgroundControlPlane(spec, registry)
        envoy = start_envoy(tmp, spec, [("127.0.0.1", cp.cp.port)], "it-envoy")
        s = Stack(tmp, spec, registry, cp, envoy, replicas, procs)
        s.wait_hosts("model-alpha", ALPHA)
        s.wait_hosts("model-beta", BETA)
        yield s
    finally:
        if envoy is not None:
            envoy.stop()
        if cp is not None:
            cp.stop()
        for p in procs:
            p.stop()


def _inputs(text: str = "hi", stream: bool = False) -> list[grpcclient.InferInput]:
    inp = grpcclient.InferInput("text_input", [1], "BYTES")
    inp.set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
    params = grpcclient.InferInput("sampling_parameters", [1], "BYTES")
    params.set_data_from_numpy(np.array([json.dumps({"max_tokens": 6}).encode()], dtype=np.object_))
    flag = grpcclient.InferInput("stream", [1], "BOOL")
    flag.set_data_from_numpy(np.array([stream]))
    return [inp, params, flag]


def served_by(stack: Stack, upstream: str) -> str:
    """The id of the replica at ``upstream`` (``host:port`` from x-caravan-upstream)."""
    ids = [rid for rid, r in stack.replicas.items() if r.endpoint == upstream]
    assert len(ids) == 1, f"x-caravan-upstream {upstream!r} names no known replica"
    return ids[0]


def infer(stack: Stack, model: str | None, session: str, model_name: str = "") -> str:
    """One stream=false request through Envoy; returns the replica id that served it."""
    headers = {"x-session-id": session}
    if model is not None:
        headers["x-model"] = model
    reply = stream_infer(stack.url, model_name or (model or "alpha"), headers)
    assert reply.finals == [True], reply
    return served_by(stack, reply.upstream)


def test_single_response_stream_through_envoy(stack: Stack) -> None:
    reply = stream_infer(stack.url, "alpha", {"x-model": "alpha", "x-session-id": "u1"})
    assert reply.finals == [True] and reply.text.strip()
    assert served_by(stack, reply.upstream) in ALPHA


def test_streaming_inference_through_envoy(stack: Stack) -> None:
    got: queue.Queue[object] = queue.Queue()
    with grpcclient.InferenceServerClient(stack.url) as client:
        client.start_stream(
            lambda result, error: got.put(error or result),
            headers={"x-model": "beta", "x-session-id": "st1"},
        )
        client.async_stream_infer("beta", _inputs(stream=True), request_id="r1")
        chunks: list[str] = []
        final = False
        deadline = time.monotonic() + 10
        while not final and time.monotonic() < deadline:
            item = got.get(timeout=10)
            assert not isinstance(item, InferenceServerException), item
            resp = item.get_response()  # type: ignore[attr-defined]
            chunks.append(item.as_numpy("text_output")[0].decode())  # type: ignore[attr-defined]
            final = resp.parameters["triton_final_response"].bool_param
        client.stop_stream()
    assert final, "the stream must end with triton_final_response"
    assert "".join(chunks).strip()


def test_same_session_lands_on_same_replica(stack: Stack) -> None:
    for session in ("s-a", "s-b", "s-c"):
        served = {infer(stack, "alpha", session) for _ in range(5)}
        assert len(served) == 1, f"session {session} was spread over {served}"
    spread = {infer(stack, "alpha", f"spread-{i}") for i in range(24)}
    assert len(spread) >= 2, f"24 sessions all hashed to {spread}"


@pytest.mark.parametrize(
    ("model", "expected"),
    [("alpha", set(ALPHA)), ("beta", set(BETA)), (None, set(ALPHA))],
    ids=["alpha-header", "beta-header", "no-header-goes-to-default"],
)
def test_model_header_routes_to_that_models_replicas(
    stack: Stack, model: str | None, expected: set[str]
) -> None:
    served = {infer(stack, model, f"route-{i}") for i in range(8)}
    assert served <= expected


def test_unknown_model_header_is_refused_not_rerouted(stack: Stack) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stream_infer(stack.url, "gamma", {"x-model": "gamma", "x-session-id": "x"})
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]
    assert "unknown model" in err.value.details()  # type: ignore[attr-defined]


def test_replica_removed_from_discovery_stops_getting_traffic(stack: Stack) -> None:
    victim = infer(stack, "alpha", "victim-session")
    rest = [i for i in ALPHA if i != victim]
    stack.publish(rest + BETA)
    try:
        stack.wait_hosts("model-alpha", rest)
        served = {infer(stack, "alpha", f"after-removal-{i}") for i in range(16)}
        assert victim not in served
        assert infer(stack, "alpha", "victim-session") in rest
    finally:
        stack.publish(ALPHA + BETA)
        stack.wait_hosts("model-alpha", ALPHA)


def _bad_snapshot(snap: Snapshot) -> Snapshot:
    """``snap`` with model-alpha's Maglev table size set to 4 (not prime): Envoy rejects it."""
    from envoy.config.cluster.v3 import cluster_pb2

    c = cluster_pb2.Cluster()
    snap.get(CLUSTER)["model-alpha"].resource.Unpack(c)
    c.maglev_lb_config.table_size.value = 4
    packed = pack(c)
    clusters = dict(snap.get(CLUSTER))
    clusters["model-alpha"] = VersionedResource("model-alpha", resource_version(packed), packed)
    return Snapshot.of({**{t: snap.get(t) for t in snap.resources}, CLUSTER: clusters})


def _client(stack: Stack) -> dict[str, object]:
    clients = stack.cp.run(stack.cp.cp.clients_json)
    assert len(clients) == 1, clients
    return clients[0]


def test_nacked_push_is_not_resent_and_traffic_keeps_flowing(stack: Stack) -> None:
    good = stack.cp.run(lambda: stack.cp.cp.cache.snapshot)
    bad = _bad_snapshot(good)
    assert stack.cp.run(lambda: stack.cp.cp.cache.set_snapshot(bad))
    wait_until(
        lambda: _client(stack)["nacks"].get("cds", 0) == 1, 10, "Envoy's NACK of the bad CDS"
    )  # type: ignore[attr-defined]
    pushes = _client(stack)["pushes"]
    assert "prime" in _client(stack)["last_nack"]["cds"].lower()  # type: ignore[index]
    time.sleep(1.0)  # Envoy re-requests after a NACK; the server must stay quiet
    assert _client(stack)["pushes"] == pushes
    assert _client(stack)["nacks"] == {"cds": 1}
    assert infer(stack, "alpha", "during-nack") in ALPHA
    # A new snapshot (the good one) goes out and is ACKed.
    assert stack.cp.run(lambda: stack.cp.cp.cache.set_snapshot(good))
    wait_until(
        lambda: _client(stack)["acked_versions"]["cds"] == good.version(CLUSTER),
        10,
        "ACK of good CDS",
    )  # type: ignore[index]
    assert infer(stack, "alpha", "after-nack") in ALPHA
