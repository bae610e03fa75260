"""(d) Memory and push fan-out: a ``caravan xds --consul`` child over many endpoints with
simulated Envoys (raw SotW ADS clients); its RSS, and one change -> every client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from convergence_builds import address, big_spec, timed
from convergence_stack import (
    ControlPlaneProc,
    consul_fake,
    get_json,
    ms,
    start_control_plane,
    stopping,
    summary,
    write_spec,
)
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from caravan.local.launch import Launcher, http_get
from caravan.xds.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE

if TYPE_CHECKING:
    from tests.fakes.consul import ConsulFake


class SimEnvoy:
    """A raw SotW ADS client: CDS wildcard, then EDS for every cluster, LDS, RDS; ACKs
    every response. ``endpoints`` holds the endpoint count per cluster it last received;
    ``seen[cluster]`` the perf_counter time each count first arrived."""

    def __init__(self, stub: Any, node: str) -> None:
        self.node = node
        self.call = stub.StreamAggregatedResources()
        self.names: dict[str, list[str]] = {CLUSTER: [], LISTENER: []}  # subscriptions
        self._clusters: list[str] = []
        self.endpoints: dict[str, int] = {}
        self.seen: dict[tuple[str, int], float] = {}
        self.task = asyncio.create_task(self._run())

    def _req(self, type_url: str, version: str = "", nonce: str = "") -> Any:
        r = discovery_pb2.DiscoveryRequest(type_url=type_url, version_info=version,
                                           response_nonce=nonce,
                                           resource_names=self.names.get(type_url, []))
        r.node.id, r.node.cluster = self.node, "bench"
        return r

    async def _run(self) -> None:
        await self.call.write(self._req(CLUSTER))
        async for resp in self.call:
            self._absorb(resp)
            await self.call.write(self._req(resp.type_url, resp.version_info, resp.nonce))
            if resp.type_url == CLUSTER and ENDPOINT not in self.names:
                self.names[ENDPOINT] = self._clusters
                await self.call.write(self._req(ENDPOINT))
                await self.call.write(self._req(LISTENER))
            elif resp.type_url == LISTENER and ROUTE not in self.names:
                self.names[ROUTE] = ["caravan-routes"]
                await self.call.write(self._req(ROUTE))

    def _absorb(self, resp: Any) -> None:
        now = time.perf_counter()
        if resp.type_url == CLUSTER:
            names = []
            for anything in resp.resources:
                c = cluster_pb2.Cluster()
                anything.Unpack(c)
                names.append(c.name)
            self._clusters = sorted(names)
            if ENDPOINT in self.names:
                self.names[ENDPOINT] = self._clusters
        elif resp.type_url == ENDPOINT:
            for anything in resp.resources:
                cla = endpoint_pb2.ClusterLoadAssignment()
                anything.Unpack(cla)
                n = sum(len(loc.lb_endpoints) for loc in cla.endpoints)
                self.endpoints[cla.cluster_name] = n
                self.seen.setdefault((cla.cluster_name, n), now)

    def total(self) -> int:
        return sum(self.endpoints.values())


def status_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of ``pid`` in KiB, from /proc/<pid>/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def build_metric(cp: ControlPlaneProc) -> tuple[float, float]:
    """(sum, count) of caravan_xds_snapshot_build_seconds on the control plane."""
    _, text = http_get(cp.admin_port, "/metrics")
    vals = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
            if line.startswith("caravan_xds_snapshot_build_seconds_")}
    return (vals.get("caravan_xds_snapshot_build_seconds_sum", 0.0),
            vals.get("caravan_xds_snapshot_build_seconds_count", 0.0))


async def wait_async(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.005)


async def fan_out(cp: ControlPlaneProc, fake: ConsulFake, models: int, endpoints: int,
                  n_clients: int, changes: int, tick: Callable[[], None]) -> dict[str, Any]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{cp.xds_port}",
                                        options=[("grpc.max_receive_message_length", 64 << 20)])
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    want = models * endpoints
    t0 = time.perf_counter()
    sims = [SimEnvoy(stub, "sim-0")]
    try:
        # One client first: the cold load (Consul answers -> debounced builds -> pushes).
        await wait_async(lambda: sims[0].total() == want, 120, f"sim-0 holding {want} endpoints")
        cold_s = time.perf_counter() - t0
        one = status_kb(cp.proc.pid)
        t0 = time.perf_counter()
        sims += [SimEnvoy(stub, f"sim-{i}") for i in range(1, n_clients)]
        await wait_async(lambda: all(s.total() == want for s in sims), 120,
                         f"{n_clients} clients holding {want} endpoints")
        join_s = time.perf_counter() - t0
        loaded = status_kb(cp.proc.pid)
        connected = len(get_json(cp.admin_port, "/debug/clients"))
        tick()
        pushes, builds_ms, consul_ms = [], [], []
        for k in range(changes):
            name, service = f"m{k}", f"triton-m{k}"
            consul_ms.append(ms(timed(lambda s=service: http_get(  # type: ignore[misc]
                fake.port, f"/v1/health/service/{s}", 10))))
            before = build_metric(cp)
            t1 = time.perf_counter()
            fake.register(service, f"{name}-new", port=8001, address="10.250.0.1")
            key = (f"model-{name}", endpoints + 1)
            await wait_async(lambda key=key: all(key in s.seen for s in sims), 30,  # type: ignore[misc]
                             f"every client holding {key}")
            pushes.append(ms(max(s.seen[key] for s in sims) - t1))
            after = build_metric(cp)
            if after[1] > before[1]:
                builds_ms.append(ms((after[0] - before[0]) / (after[1] - before[1])))
            tick()
        return {"clients": n_clients, "connected_per_debug_clients": connected,
                "cold_load_one_client_s": round(cold_s, 2),
                "other_clients_join_s": round(join_s, 2),
                "rss_mb_one_client": round(one["VmRSS"] / 1024, 1),
                "rss_mb_with_clients": round(loaded["VmRSS"] / 1024, 1),
                "rss_mb_peak": round(status_kb(cp.proc.pid)["VmHWM"] / 1024, 1),
                "change_to_all_clients_ms": summary(pushes),
                "consul_fake_query_ms": summary(consul_ms),
                "live_build_ms": summary(builds_ms) if builds_ms else None}
    finally:
        for s in sims:
            s.call.cancel()
        await asyncio.gather(*(s.task for s in sims), return_exceptions=True)
        await channel.close()


def memory(tmp: Path, models: int, endpoints: int, n_clients: int, changes: int,
           tick: Callable[[], None]) -> dict[str, Any]:
    fake = consul_fake()
    for m in range(models):
        for e in range(endpoints):
            fake.register(f"triton-m{m}", f"m{m}-{e}", port=8001, address=address(m, e))
    fake.start()
    spec = big_spec(models, fake.address)
    path = write_spec(spec, tmp / "spec-d.yaml")
    with stopping(fake), Launcher(tmp / "memory") as launcher:
        cp = start_control_plane(launcher, spec, path, "cp-d", timeout_s=60)
        tick()
        return asyncio.run(fan_out(cp, fake, models, endpoints, n_clients, changes, tick))
