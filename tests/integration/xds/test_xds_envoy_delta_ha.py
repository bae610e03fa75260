"""Real Envoy over delta xDS, and over two control-plane instances (HA failover).

Replicas here are the tiny stub (xds_stub_replica.py), which echoes the x-request-id
it received, so request-id propagation through Envoy is checked too. Requests are
streams (the stub, like Triton with vLLM, serves no unary inference); the replica that
served one is Envoy's ``x-caravan-upstream`` response header."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from xds_envoy_harness import (
    BackgroundControlPlane,
    ChildProcess,
    cluster_hosts,
    healthy_hosts,
    start_envoy,
    start_stub,
    stream_infer,
    wait_until,
)

from caravan.discovery.registry_file import write_registry
from caravan.discovery.types import Replica
from caravan.local.process import free_port
from caravan.spec import PlatformSpec, parse_spec

pytestmark = pytest.mark.integration


def _spec() -> PlatformSpec:
    return parse_spec(
        {
            "models": [
                {
                    "name": "alpha",
                    "engine": {"model": "m/alpha"},
                    "routing": {"maglev_table_size": 1031},
                }
            ],
            "envoy": {"listen_port": free_port(), "admin_port": free_port()},
            "control_plane": {"debounce_quiet_ms": 20, "debounce_max_ms": 200},
        }
    )


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[Replica]]:
    procs: list[ChildProcess] = []
    out: list[Replica] = []
    try:
        for i in range(2):
            proc, port = start_stub(tmp_path, f"alpha-{i}", "alpha")
            procs.append(proc)
            out.append(Replica(f"alpha-{i}", "alpha", "127.0.0.1", port))
        yield out
    finally:
        for p in procs:
            p.stop()


def _upstream_request_id(spec: PlatformSpec) -> str:
    """The x-request-id the stub replica saw (it echoes it as a response parameter)."""
    reply = stream_infer(f"127.0.0.1:{spec.envoy.listen_port}", "alpha", {"x-model": "alpha"})
    return str(reply.responses[0].infer_response.parameters["x_request_id"].string_param)


def _served(spec: PlatformSpec, session: str, replicas: list[Replica]) -> str:
    """The id of the replica that served one stream=false request for ``session``."""
    reply = stream_infer(
        f"127.0.0.1:{spec.envoy.listen_port}", "alpha", {"x-model": "alpha", "x-session-id": session}
    )
    assert reply.finals == [True], reply
    return next(r.id for r in replicas if r.endpoint == reply.upstream)


def _wait_hosts(spec: PlatformSpec, want: list[Replica]) -> None:
    endpoints = {r.endpoint for r in want}
    wait_until(
        lambda: (
            healthy_hosts(spec.envoy.admin_port, "model-alpha") == endpoints
            and set(cluster_hosts(spec.envoy.admin_port).get("model-alpha", {})) == endpoints
        ),
        20,
        f"model-alpha == {sorted(endpoints)}",
    )


def test_envoy_over_delta_xds_follows_adds_and_removals(
    tmp_path: Path, replicas: list[Replica]
) -> None:
    spec, registry = _spec(), tmp_path / "registry.json"
    write_registry(registry, replicas[:1])
    cp = BackgroundControlPlane(spec, registry)
    envoy = start_envoy(tmp_path, spec, [("127.0.0.1", cp.cp.port)], "delta-envoy", delta=True)
    try:
        _wait_hosts(spec, replicas[:1])
        assert _served(spec, "d1", replicas) == "alpha-0"
        assert _upstream_request_id(spec), (
            "Envoy must generate x-request-id and forward it upstream"
        )
        write_registry(registry, replicas)
        _wait_hosts(spec, replicas)
        write_registry(registry, replicas[1:])
        _wait_hosts(spec, replicas[1:])
        assert {_served(spec, f"d-{i}", replicas) for i in range(6)} == {"alpha-1"}
        (client,) = cp.run(cp.cp.clients_json)
        assert client["protocol"] == "delta" and client["nacks"] == {}
        assert (
            client["acked_versions"]["eds"]
            == cp.run(lambda: cp.cp.cache.snapshot.versions)[
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            ]
        )
    finally:
        envoy.stop()
        cp.stop()


def test_envoy_fails_over_between_two_control_planes(
    tmp_path: Path, replicas: list[Replica]
) -> None:
    spec, registry = _spec(), tmp_path / "registry.json"
    write_registry(registry, replicas[:1])
    cps = [BackgroundControlPlane(spec, registry) for _ in range(2)]
    versions = [cp.run(lambda cp=cp: dict(cp.cp.cache.snapshot.versions)) for cp in cps]
    assert versions[0] == versions[1], "HA instances must agree on versions"
    envoy = start_envoy(tmp_path, spec, [("127.0.0.1", cp.cp.port) for cp in cps], "ha-envoy")
    try:
        _wait_hosts(spec, replicas[:1])
        wait_until(
            lambda: sum(len(cp.run(cp.cp.clients_json)) for cp in cps) == 1, 10, "one ADS stream"
        )
        active = next(cp for cp in cps if cp.run(cp.cp.clients_json))
        standby = next(cp for cp in cps if cp is not active)
        active.stop()
        assert _served(spec, "during-failover", replicas) == "alpha-0"  # Envoy keeps its last config
        write_registry(registry, replicas)
        _wait_hosts(spec, replicas)
        (client,) = standby.run(standby.cp.clients_json)
        assert client["node_id"] == "ha-envoy"
    finally:
        envoy.stop()
        for cp in cps:
            cp.stop()
