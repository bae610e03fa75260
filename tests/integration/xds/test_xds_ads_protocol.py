"""ADS over real gRPC (loopback) with a raw client: SotW and delta protocol rules,
client tracking and metrics; plus ``caravan xds --registry`` as a process."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2
from prometheus_client import CollectorRegistry

from caravan.discovery.registry_file import write_registry
from caravan.discovery.types import Replica, ReplicaSet
from caravan.local.process import ChildProcess, free_port, wait_for_port
from caravan.spec import PlatformSpec, parse_spec
from caravan.xds.builder import build_snapshot
from caravan.xds.cache import SnapshotCache
from caravan.xds.clients import ClientRegistry, XdsMetrics
from caravan.xds.server import XdsServer
from caravan.xds.snapshot import CLUSTER, ENDPOINT, Snapshot

pytestmark = pytest.mark.integration

SPEC = parse_spec(
    {
        "models": [
            {"name": "alpha", "engine": {"model": "m/a"}},
            {"name": "beta", "engine": {"model": "m/b"}},
        ]
    }
)
QUIET_S = 0.3


def snap(*ports: int, spec: PlatformSpec = SPEC) -> Snapshot:
    rs = ReplicaSet.of("alpha", [Replica(f"a{p}", "alpha", "127.0.0.1", p) for p in ports])
    return build_snapshot(spec, {"alpha": rs})


class Stream:
    """One raw ADS stream; responses collected by a reader task."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.got: asyncio.Queue[Any] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for resp in self.call:
            self.got.put_nowait(resp)

    async def send(self, req: Any) -> None:
        await self.call.write(req)

    async def next(self, timeout: float = 3.0) -> Any:
        return await asyncio.wait_for(self.got.get(), timeout)

    async def quiet(self, seconds: float = QUIET_S) -> bool:
        await asyncio.sleep(seconds)
        return self.got.empty()

    async def close(self) -> None:
        self.call.cancel()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


@asynccontextmanager
async def ads_server(
    initial: Snapshot | None,
) -> AsyncIterator[tuple[SnapshotCache, ClientRegistry, CollectorRegistry, Any]]:
    cache, clients, registry = SnapshotCache(), ClientRegistry(), CollectorRegistry()
    if initial is not None:
        cache.set_snapshot(initial)
    server = XdsServer(cache, clients, XdsMetrics(registry), port=0)
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield cache, clients, registry, ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(0)


def sotw(
    type_url: str,
    names: tuple[str, ...] = (),
    version: str = "",
    nonce: str = "",
    error: str | None = None,
) -> discovery_pb2.DiscoveryRequest:
    r = discovery_pb2.DiscoveryRequest(
        type_url=type_url, resource_names=names, version_info=version, response_nonce=nonce
    )
    r.node.id, r.node.cluster = "raw-envoy", "test"
    if error is not None:
        r.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return r


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_sotw_ack_nack_park_and_resend_after_change() -> None:
    async def scenario() -> None:
        async with ads_server(snap(1)) as (cache, clients, registry, stub):
            s = Stream(stub.StreamAggregatedResources())
            await s.send(sotw(CLUSTER))
            cds = await s.next()
            assert cds.version_info == snap(1).version(CLUSTER) and len(cds.resources) == 2
            await s.send(sotw(CLUSTER, version=cds.version_info, nonce=cds.nonce))
            assert await s.quiet()
            assert clients.to_json()[0]["acked_versions"]["cds"] == cds.version_info
            # Change, then NACK it: the NACKed version is never resent ...
            models = [
                {**m.model_dump(), "routing": {"maglev_table_size": 1031}} for m in SPEC.models
            ]
            bad = snap(1, spec=parse_spec({"models": models}))
            cache.set_snapshot(bad)
            pushed = await s.next()
            await s.send(sotw(CLUSTER, version=cds.version_info, nonce=pushed.nonce, error="no"))
            assert await s.quiet()
            await s.send(sotw(CLUSTER, version=cds.version_info, nonce=pushed.nonce))  # re-request
            assert await s.quiet()
            assert registry.get_sample_value("caravan_xds_nacks_total", {"type": "cds"}) == 1
            assert clients.to_json()[0]["last_nack"] == {"cds": "no"}
            # ... until the snapshot changes.
            cache.set_snapshot(snap(1))
            back = await s.next()
            assert back.version_info == cds.version_info and back.nonce != pushed.nonce
            await s.close()

    run(scenario)


def test_nothing_is_answered_before_the_first_snapshot() -> None:
    """An Envoy reconnecting to a restarted control plane before its first discovery
    result must not get the empty snapshot: in SotW that removes every cluster it holds
    (seen as Envoy 'NC' replies in the control-plane restart fault test)."""
    async def scenario() -> None:
        async with ads_server(None) as (cache, _clients, _registry, stub):
            s = Stream(stub.StreamAggregatedResources())
            await s.send(sotw(CLUSTER))
            assert await s.quiet()
            cache.set_snapshot(snap(1))
            cds = await s.next()
            assert cds.version_info == snap(1).version(CLUSTER) and len(cds.resources) == 2
            await s.close()

    run(scenario)


def test_sotw_stale_nonce_ignored_and_unknown_eds_name_empty() -> None:
    async def scenario() -> None:
        async with ads_server(snap(1)) as (cache, _clients, _registry, stub):
            s = Stream(stub.StreamAggregatedResources())
            await s.send(sotw(ENDPOINT, ("model-alpha", "model-ghost")))
            first = await s.next()
            clas = []
            for r in first.resources:
                cla = endpoint_pb2.ClusterLoadAssignment()
                r.Unpack(cla)
                clas.append(cla)
            assert [(c.cluster_name, len(c.endpoints)) for c in clas] == [
                ("model-alpha", 1),
                ("model-ghost", 0),
            ]
            cache.set_snapshot(snap(1, 2))
            second = await s.next()
            await s.send(
                sotw(ENDPOINT, ("model-alpha",), first.version_info, first.nonce, error="late")
            )
            assert await s.quiet()  # stale nonce: no NACK bookkeeping, no response
            await s.send(
                sotw(ENDPOINT, ("model-alpha", "model-ghost"), second.version_info, second.nonce)
            )
            assert await s.quiet()
            await s.close()

    run(scenario)


def test_sotw_reconnect_with_current_version_gets_nothing_until_change() -> None:
    async def scenario() -> None:
        async with ads_server(snap(1)) as (cache, clients, registry, stub):
            s = Stream(stub.StreamAggregatedResources())
            await s.send(sotw(CLUSTER))
            cds = await s.next()
            await s.close()
            s2 = Stream(stub.StreamAggregatedResources())
            await s2.send(sotw(CLUSTER, version=cds.version_info))
            assert await s2.quiet()
            models = [
                {**m.model_dump(), "routing": {"retries": 0, "maglev_table_size": 1031}}
                for m in SPEC.models
            ]
            cache.set_snapshot(snap(1, spec=parse_spec({"models": models})))
            assert (await s2.next()).version_info != cds.version_info
            assert (
                registry.get_sample_value("caravan_xds_connected_clients", {"protocol": "sotw"})
                == 1
            )
            assert [c["node_id"] for c in clients.to_json()] == ["raw-envoy"]
            await s2.close()

    run(scenario)


def delta(
    type_url: str,
    sub: tuple[str, ...] = (),
    unsub: tuple[str, ...] = (),
    nonce: str = "",
    initial: dict[str, str] | None = None,
) -> discovery_pb2.DeltaDiscoveryRequest:
    r = discovery_pb2.DeltaDiscoveryRequest(
        type_url=type_url,
        resource_names_subscribe=sub,
        resource_names_unsubscribe=unsub,
        response_nonce=nonce,
        initial_resource_versions=initial or {},
    )
    r.node.id = "raw-delta"
    return r


def test_delta_add_remove_and_initial_versions() -> None:
    one_model = parse_spec({"models": [SPEC.models[0].model_dump()]})

    async def scenario() -> None:
        async with ads_server(snap(1)) as (cache, _clients, registry, stub):
            s = Stream(stub.DeltaAggregatedResources())
            await s.send(delta(CLUSTER))
            first = await s.next()
            assert sorted(r.name for r in first.resources) == ["model-alpha", "model-beta"]
            await s.send(delta(CLUSTER, nonce=first.nonce))
            cache.set_snapshot(snap(1, spec=one_model))
            removal = await s.next()
            assert list(removal.removed_resources) == ["model-beta"] and not removal.resources
            await s.send(delta(CLUSTER, nonce=removal.nonce))
            assert await s.quiet()
            have = {r.name: r.version for r in first.resources}
            await s.close()
            # Reconnect, announcing what we have: only the removal is sent.
            s2 = Stream(stub.DeltaAggregatedResources())
            await s2.send(delta(CLUSTER, initial=have))
            again = await s2.next()
            assert list(again.removed_resources) == ["model-beta"] and not again.resources
            await s2.send(delta(ENDPOINT, sub=("model-alpha",)))
            eds = await s2.next()
            assert [r.name for r in eds.resources] == ["model-alpha"]
            assert (
                registry.get_sample_value(
                    "caravan_xds_pushes_total", {"type": "cds", "protocol": "delta"}
                )
                == 3
            )
            await s2.close()

    run(scenario)


def _admin(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return str(r.read().decode())


def test_caravan_xds_command_serves_registry(tmp_path: Path) -> None:
    spec_path, registry = tmp_path / "spec.yaml", tmp_path / "registry.json"
    port, admin = free_port(), free_port()
    spec_path.write_text(
        json.dumps(
            {
                "models": [{"name": "alpha", "engine": {"model": "m/a"}}],
                "control_plane": {"xds_port": port, "admin_port": admin, "debounce_quiet_ms": 10},
            }
        )
    )
    write_registry(registry, [Replica("a0", "alpha", "127.0.0.1", 9999)])
    log = tmp_path / "xds.log"
    argv = [
        sys.executable,
        "-m",
        "caravan",
        "xds",
        "--spec",
        str(spec_path),
        "--registry",
        str(registry),
    ]
    with ChildProcess("xds", argv, log) as proc:
        wait_for_port("127.0.0.1", port, 20)

        async def scenario() -> None:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                s = Stream(
                    ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch).StreamAggregatedResources()
                )
                await s.send(sotw(ENDPOINT, ("model-alpha",)))
                resp = await s.next(10)
                cla = endpoint_pb2.ClusterLoadAssignment()
                resp.resources[0].Unpack(cla)
                while not cla.endpoints:  # first snapshot may predate the registry read
                    await s.send(sotw(ENDPOINT, ("model-alpha",), resp.version_info, resp.nonce))
                    resp = await s.next(10)
                    resp.resources[0].Unpack(cla)
                assert cla.endpoints[0].lb_endpoints[0].endpoint.hostname == "a0"
                clients = json.loads(await asyncio.to_thread(_admin, admin, "/debug/clients"))
                assert [c["node_id"] for c in clients] == ["raw-envoy"]
                await s.close()

        run(scenario)
        assert _admin(admin, "/readyz") == "ready\n"
        assert "caravan_xds_pushes_total" in _admin(admin, "/metrics")
        snapshot = json.loads(_admin(admin, "/debug/snapshot"))
        assert set(snapshot["eds"]["resources"]) == {"model-alpha"}
        assert proc.stop() == 0
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(rec["msg"] == "xds ready" and rec["component"] == "xds" for rec in lines)
