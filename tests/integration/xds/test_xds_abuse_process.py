"""``caravan xds`` as a process under the control-plane attacks of issue 17 (oversize
EDS requests, clients that never read, fake NACK and unknown-type floods): it stays
responsive (``/healthz``), its memory stays bounded and its log small."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc
from tests.integration.xds.test_xds_abuse import flood_without_reading
from tests.integration.xds.test_xds_ads_protocol import sotw

from caravan.discovery.registry_file import write_registry
from caravan.discovery.types import Replica
from caravan.local.launch import http_get, start_control_plane
from caravan.local.process import free_port
from caravan.xds.limits import MAX_RESOURCE_NAMES
from caravan.xds.snapshot import CLUSTER, ENDPOINT

pytestmark = pytest.mark.integration
MEMORY_LIMIT_MIB = 512  # the rendered control-plane job's memory limit


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def _oversize(stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub, rounds: int) -> None:
    names = tuple(f"model-{i}" for i in range(MAX_RESOURCE_NAMES * 50))
    for _ in range(rounds):
        call = stub.StreamAggregatedResources()
        await call.write(sotw(ENDPOINT, names=names))
        assert await asyncio.wait_for(call.code(), 10) == grpc.StatusCode.RESOURCE_EXHAUSTED


async def _never_reads(stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub) -> None:
    code = await flood_without_reading(stub.StreamAggregatedResources())
    assert code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL)  # see there


async def _floods(stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub) -> None:
    call = stub.StreamAggregatedResources()
    await call.write(sotw(CLUSTER))
    cds = await asyncio.wait_for(call.read(), 10)
    for i in range(100):
        await call.write(sotw(CLUSTER, nonce=cds.nonce, error="E" * 200_000))
        await call.write(sotw(f"type.googleapis.com/x{i}" + "T" * 200_000))
    call.cancel()


def _healthz_ms(admin: int, probes: int) -> list[float]:
    out = []
    for _ in range(probes):
        t0 = time.perf_counter()
        assert http_get(admin, "/healthz", 5)[0] == 200
        out.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.02)
    return out


def test_control_plane_process_stays_responsive_and_bounded(tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"models": [{"name": "alpha", "engine": {"model": "m/a"}}],
                                "control_plane": {"xds_port": port, "admin_port": admin}}))
    log, registry = tmp_path / "xds.log", tmp_path / "registry.json"
    write_registry(registry, [Replica("a0", "alpha", "127.0.0.1", 9999)])
    with start_control_plane(spec, log, port=port, admin_port=admin, registry=registry,
                             ready=True) as proc:
        before = _rss_mib(proc.pid)

        async def attack() -> list[float]:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(ch)
                probes = asyncio.create_task(asyncio.to_thread(_healthz_ms, admin, 60))
                await asyncio.gather(*[_oversize(stub, 10) for _ in range(5)],
                                     *[_never_reads(stub) for _ in range(3)], _floods(stub))
                return await probes

        latencies = asyncio.run(asyncio.wait_for(attack(), 60))
        rss = _rss_mib(proc.pid)
        metrics = http_get(admin, "/metrics")[1]
        assert proc.alive()
    assert 'caravan_xds_refused_streams_total{protocol="sotw"} 53.0' in metrics  # 5 x 10 + 3
    assert 'caravan_xds_nacks_total{type="cds"}' not in metrics
    p95 = statistics.quantiles(latencies, n=20)[-1]
    print(f"healthz p95 {p95:.1f} ms max {max(latencies):.1f} ms; RSS {before:.0f} -> {rss:.0f} MiB")
    assert p95 < 250, f"/healthz p95 {p95:.0f} ms under attack"
    assert rss < MEMORY_LIMIT_MIB and rss - before < 150, (before, rss)
    assert log.stat().st_size < 1_000_000
