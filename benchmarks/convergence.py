"""How fast does a Consul change reach Envoy, and what does a big snapshot cost?

    .venv/bin/python benchmarks/convergence.py [--changes 60] [--clients 50]

Everything runs on 127.0.0.1 (free ports) with real processes where it matters:

(a) convergence: Consul fake (in this process) -> ``caravan xds --consul`` (subprocess,
    the spec's default debounce: 50 ms quiet window, 1 s max delay) -> real Envoy ->
    real replicas (``tritonserver`` with the simulated vLLM engine). Each change registers
    a new service instance (a fresh Consul id on the spare replica's port); we time
    change -> Envoy's ACK of the new EDS version (polling the control plane's
    /debug/clients) and change -> the first request of a steady loop (one stream=false
    ModelStreamInfer request per stream) that Envoy's ``x-caravan-upstream`` says the
    new replica served. Then the
    instance is deregistered (its ACK is timed too) and Envoy must drop it before the
    next change.
(b) full build: the pure ``build_snapshot`` for 100 models x 100 endpoints (10,000
    endpoints), plus the pre-push consistency check the control plane runs.
(c) one-model rebuild: ``SnapshotBuilder`` (per-model memo) after one model changes.
(d) memory: a ``caravan xds --consul`` subprocess over 100 x 100 endpoints with 50
    simulated Envoys (raw gRPC SotW ADS clients: CDS, EDS for every cluster, LDS, RDS,
    each ACKed); VmRSS/VmHWM from /proc/<pid>/status; and the push fan-out: one
    model's change -> every client holding the new endpoints.

Targets (issue 3): change -> ACK p99 <= quiet window + 50 ms; full build of 10,000
endpoints <= 250 ms; one-model rebuild <= 10 ms; RSS <= 200 MB. Misses are reported as
misses. Prints a table and writes benchmarks/results/convergence.json. Every wait is
bounded; the whole run takes about 1-2 minutes on 2 cores.

Processes are started through ``caravan.local.launch`` (the starters ``caravan up``
uses). There is no Consul binary here: the Consul fake (``tests/fakes/consul/``, a
faithful stand-in for the agent's HTTP API) is loaded by ``fakes.load_fake``; no other test
code is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import yaml
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from caravan.bench.stats import percentile
from caravan.discovery.types import Replica, ReplicaSet
from caravan.local.launch import (
    Launcher,
    envoy_hosts,
    http_get,
    serving_hosts,
    stream_request,
    wait_until,
)
from caravan.local.process import ChildProcess, free_port
from caravan.spec import PlatformSpec, parse_spec
from caravan.triton.launcher import ReplicaOptions
from caravan.xds.builder import SnapshotBuilder, build_snapshot
from caravan.xds.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE, check_consistency
from fakes import load_fake

if TYPE_CHECKING:
    from tests.fakes.consul import ConsulFake

ROOT = Path(__file__).resolve().parents[1]
REPLICA_OPTIONS = ReplicaOptions(time_scale=0.01, stream_interval_ms=0, exit_timeout_s=10)


def consul_fake() -> ConsulFake:
    """A new Consul fake (``tests/fakes/consul/``)."""
    fake: ConsulFake = load_fake("consul").ConsulFake()
    return fake


def get_json(port: int, path: str) -> Any:
    status, body = http_get(port, path)
    if status != 200:
        raise RuntimeError(f"GET :{port}{path} -> {status}: {body[:200]}")
    return json.loads(body)


def write_spec(spec: PlatformSpec, path: Path) -> Path:
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    return path


@dataclass
class ControlPlaneProc:
    """One ``caravan xds --consul`` child."""

    name: str
    xds_port: int
    admin_port: int
    proc: ChildProcess

    def clients(self) -> list[dict[str, Any]]:
        data = get_json(self.admin_port, "/debug/clients")
        assert isinstance(data, list)
        return data


def start_control_plane(launcher: Launcher, spec: PlatformSpec, spec_path: Path, name: str,
                        timeout_s: float = 30) -> ControlPlaneProc:
    """``caravan xds --consul`` on the spec's ports; returns once /readyz answers 200."""
    port, admin = spec.control_plane.xds_port, spec.control_plane.admin_port
    proc = launcher.control_plane(spec_path, port=port, admin_port=admin, consul=True, node_id=name,
                                  name=name, ready=True, timeout_s=timeout_s)
    return ControlPlaneProc(name, port, admin, proc)


RESULTS = Path(__file__).parent / "results" / "convergence.json"
ENVOY_NODE = "bench-envoy"
QUIET_MS, MAX_MS = 50, 1000  # the spec's defaults
TARGETS = {"change_to_ack_p99_ms": QUIET_MS + 50, "full_build_ms": 250.0,
           "one_model_rebuild_ms": 10.0, "rss_mb": 200.0}


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


def summary(values_ms: list[float]) -> dict[str, float]:
    """p50/p99/max/mean of a list of milliseconds."""
    return {"n": len(values_ms), "p50": round(percentile(values_ms, 50), 2),
            "p99": round(percentile(values_ms, 99), 2), "max": round(max(values_ms), 2),
            "mean": round(statistics.fmean(values_ms), 2)}


# --------------------------------------------------------------------- (a) convergence


class Recorder:
    """Steady stream=false requests through Envoy (distinct sessions) in a thread; records
    when a response from the replica at ``watch`` (host:port, per ``x-caravan-upstream``)
    arrives (perf_counter s). Bounded by ``max_s`` and count."""

    def __init__(self, url: str, model: str, watch: str, max_s: float) -> None:
        self.url, self.model, self.watch, self.max_s = url, model, watch, max_s
        self.hits: list[float] = []
        self.sent = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-traffic")

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_s
        with grpc.insecure_channel(self.url) as channel:
            while not self._stop.is_set() and time.monotonic() < deadline and self.sent < 10**6:
                self.sent += 1
                reply = stream_request(self.url, self.model, {"x-model": self.model,
                                                              "x-session-id": f"bench-{self.sent}"},
                                       channel=channel)
                if not reply.ok:
                    self.errors += 1
                elif reply.upstream == self.watch:
                    self.hits.append(time.perf_counter())

    def first_after(self, t0: float) -> float | None:
        """When the first response from ``watch`` after ``t0`` arrived, or None."""
        return next((t for t in list(self.hits) if t > t0), None)

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


def acked_eds(cp: ControlPlaneProc) -> str:
    for c in cp.clients():
        if c["node_id"] == ENVOY_NODE:
            return str(c["acked_versions"].get("eds", ""))
    return ""


def wait_ack_change(cp: ControlPlaneProc, before: str, timeout_s: float = 10) -> tuple[float, str]:
    """Poll /debug/clients (every ~2 ms) until Envoy's ACKed EDS version differs from
    ``before``; returns (perf_counter when seen, new version)."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        now = acked_eds(cp)
        if now and now != before:
            return time.perf_counter(), now
        time.sleep(0.002)
    raise TimeoutError(f"Envoy did not ACK a new EDS version within {timeout_s}s")


def wait_first(traffic: Recorder, t0: float, timeout_s: float = 10) -> float:
    """perf_counter time of the first response from the new replica after ``t0``."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        hit = traffic.first_after(t0)
        if hit is not None:
            return hit
        time.sleep(0.002)
    raise TimeoutError(f"no request reached the new replica within {timeout_s}s")


@contextmanager
def stopping(fake: ConsulFake) -> Iterator[ConsulFake]:
    """Stop ``fake`` on exit (after the processes of an enclosed ``Launcher``)."""
    try:
        yield fake
    finally:
        fake.stop()


def small_spec(consul: str) -> PlatformSpec:
    """Model ``alpha`` on free ports, the spec's default debounce, watching ``consul``."""
    return parse_spec({
        "models": [{"name": "alpha", "engine": {"model": "m/alpha"},
                    "routing": {"maglev_table_size": 1031, "retries": 1, "unary_timeout_s": 10}}],
        "envoy": {"listen_port": free_port(), "admin_port": free_port()},
        "control_plane": {"xds_port": free_port(), "admin_port": free_port(),
                          "debounce_quiet_ms": QUIET_MS, "debounce_max_ms": MAX_MS},
        "consul": {"address": consul, "wait_s": 5, "timeout_s": 2},
    }, "bench-convergence")


def register(fake: ConsulFake, sid: str, port: int, metrics_port: int) -> None:
    """Register a replica of ``alpha`` on 127.0.0.1 as Nomad would (service triton-alpha)."""
    fake.register("triton-alpha", sid, port=port, address="127.0.0.1",
                  meta={"model": "alpha", "metrics_port": str(metrics_port)})


def convergence(tmp: Path, changes: int, tick: Callable[[], None]) -> dict[str, Any]:
    fake = consul_fake()
    fake.start()
    spec = small_spec(fake.address)
    spec_path = write_spec(spec, tmp / "spec-a.yaml")
    with stopping(fake), Launcher(tmp) as launcher:
        reps = launcher.replicas(["alpha-0", "alpha-1", "spare"], "alpha", REPLICA_OPTIONS)
        for r in reps[:2]:
            register(fake, r.id, r.port, r.metrics_port)
        cp = start_control_plane(launcher, spec, spec_path, "cp-a")
        launcher.envoy(spec, [("127.0.0.1", cp.xds_port)], node_id=ENVOY_NODE)
        admin, spare = spec.envoy.admin_port, reps[2]
        base = {reps[0].endpoint, reps[1].endpoint}
        wait_until(lambda: serving_hosts(admin, "model-alpha") == base, 30, "baseline in Envoy")
        to_ack, to_first, removal = [], [], []
        url = f"127.0.0.1:{spec.envoy.listen_port}"
        with Recorder(url, "alpha", spare.endpoint, max_s=60 + changes * 2) as traffic:
            for i in range(changes):
                before = acked_eds(cp)
                t0 = time.perf_counter()
                register(fake, f"spare-{i}", spare.port, spare.metrics_port)
                t_ack, after = wait_ack_change(cp, before)
                to_ack.append(ms(t_ack - t0))
                first = wait_first(traffic, t0)
                to_first.append(ms(first - t0))
                t1 = time.perf_counter()
                fake.deregister(f"spare-{i}")
                t_gone, _ = wait_ack_change(cp, after)
                removal.append(ms(t_gone - t1))
                wait_until(lambda: spare.endpoint not in envoy_hosts(admin, "model-alpha"), 10,
                           "spare dropped by Envoy")
                tick()
    return {"changes": changes, "quiet_window_ms": QUIET_MS, "max_delay_ms": MAX_MS,
            "change_to_ack_ms": summary(to_ack), "change_to_first_request_ms": summary(to_first),
            "removal_to_ack_ms": summary(removal),
            "traffic": {"requests": traffic.sent, "errors": traffic.errors}}


# --------------------------------------------------------------------- (b, c) builds


def big_spec(models: int, consul: str = "127.0.0.1:8500") -> PlatformSpec:
    return parse_spec({
        "models": [{"name": f"m{i}", "engine": {"model": f"org/m{i}"}} for i in range(models)],
        "envoy": {"listen_port": free_port(), "admin_port": free_port()},
        "control_plane": {"xds_port": free_port(), "admin_port": free_port(),
                          "debounce_quiet_ms": QUIET_MS, "debounce_max_ms": MAX_MS},
        # A generous HTTP timeout: the fake's first answers at 10,000 entries take seconds.
        "consul": {"address": consul, "wait_s": 30, "timeout_s": 30},
    }, "bench-100x100")


def address(model: int, endpoint: int) -> str:
    return f"10.{1 + model // 250}.{model % 250}.{endpoint + 1}"


def big_sets(models: int, endpoints: int) -> dict[str, ReplicaSet]:
    return {f"m{m}": ReplicaSet.of(f"m{m}", [
        Replica(f"m{m}-{e}", f"m{m}", address(m, e), 8001, metrics_port=8002)
        for e in range(endpoints)]) for m in range(models)}


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def builds(models: int, endpoints: int, repeats: int, tick: Callable[[], None]) -> dict[str, Any]:
    spec, sets = big_spec(models), big_sets(models, endpoints)
    full, check = [], []
    for _ in range(repeats):
        snap = build_snapshot(spec, sets)
        full.append(ms(timed(lambda: build_snapshot(spec, sets))))
        check.append(ms(timed(lambda s=snap: check_consistency(s))))  # type: ignore[misc]
        tick()
    builder = SnapshotBuilder()
    builder.build(spec, sets)
    one, one_checked, rebuilt = [], [], set()
    for k in range(repeats * 4):
        name = f"m{k % models}"
        grown = [*sets[name].replicas, Replica(f"{name}-x{k}", name, "10.200.0.1", 9000 + k)]
        sets[name] = ReplicaSet.of(name, grown)
        t = timed(lambda: builder.build(spec, sets))
        rebuilt.add(builder.rebuilt)
        one.append(ms(t))
        snap = builder.build(spec, sets)  # memo hit: same snapshot, to time the check alone
        one_checked.append(ms(t + timed(lambda s=snap: check_consistency(s))))  # type: ignore[misc]
    return {"models": models, "endpoints_per_model": endpoints,
            "full_build_ms": summary(full), "consistency_check_ms": summary(check),
            "one_model_rebuild_ms": summary(one),
            "one_model_rebuild_plus_check_ms": summary(one_checked),
            "models_rebuilt_per_change": sorted(rebuilt)}


# --------------------------------------------------------------------- (d) memory, fan-out


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


# --------------------------------------------------------------------- report


def verdicts(res: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(figure, measured, target) for each target of the issue."""
    b = res["builds"]
    return [
        ("change -> Envoy ACK, p99 (ms)", res["convergence"]["change_to_ack_ms"]["p99"],
         TARGETS["change_to_ack_p99_ms"]),
        (f"full build {b['models']}x{b['endpoints_per_model']}, median (ms)",
         res["builds"]["full_build_ms"]["p50"],
         TARGETS["full_build_ms"]),
        ("one-model rebuild, p99 (ms)", res["builds"]["one_model_rebuild_ms"]["p99"],
         TARGETS["one_model_rebuild_ms"]),
        (f"control-plane peak RSS, {res['memory']['clients']} clients (MB)",
         res["memory"]["rss_mb_peak"],
         TARGETS["rss_mb"]),
    ]


def print_report(res: dict[str, Any], console: Console) -> None:
    table = Table(title="Caravan convergence benchmark")
    for col in ("figure", "measured", "target", "verdict"):
        table.add_column(col)
    for name, got, target in verdicts(res):
        table.add_row(name, f"{got:g}", f"<= {target:g}", "met" if got <= target else "MISSED")
    console.print(table)
    c, b, m = res["convergence"], res["builds"], res["memory"]
    console.print(f"change -> ACK p50 {c['change_to_ack_ms']['p50']} ms; change -> first request "
                  f"at the new replica p50 {c['change_to_first_request_ms']['p50']} / p99 "
                  f"{c['change_to_first_request_ms']['p99']} ms; removal -> ACK p99 "
                  f"{c['removal_to_ack_ms']['p99']} ms; traffic errors {c['traffic']['errors']}")
    console.print(f"consistency check {b['consistency_check_ms']['p50']} ms; one-model rebuild + "
                  f"check p99 {b['one_model_rebuild_plus_check_ms']['p99']} ms; RSS with 1 / "
                  f"{m['clients']} clients {m['rss_mb_one_client']} / {m['rss_mb_with_clients']} "
                  f"MB, peak {m['rss_mb_peak']} MB; one change -> all "
                  f"{m['clients']} clients p50 {m['change_to_all_clients_ms']['p50']} ms")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--changes", type=int, default=60, help="Consul changes timed (the issue asks >= 50)")
    p.add_argument("--clients", type=int, default=50, help="simulated ADS clients")
    p.add_argument("--models", type=int, default=100)
    p.add_argument("--endpoints", type=int, default=100, help="endpoints per model")
    p.add_argument("--repeats", type=int, default=5, help="full builds timed")
    p.add_argument("--fanout-changes", type=int, default=10)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    if a.changes < 1 or a.clients < 1 or a.models < 1 or a.endpoints < 1 or a.repeats < 1:
        p.error("--changes, --clients, --models, --endpoints and --repeats must be >= 1")
    if a.fanout_changes > a.models:
        p.error(f"--fanout-changes ({a.fanout_changes}) must be <= --models ({a.models})")
    console = Console()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="caravan-conv-") as d, Progress(console=console) as bar:
        tmp = Path(d)
        ta = bar.add_task("(a) Consul change -> Envoy", total=a.changes)
        tb = bar.add_task("(b,c) snapshot builds", total=a.repeats)
        td = bar.add_task("(d) RSS + fan-out", total=a.fanout_changes + 2)
        res: dict[str, Any] = {"convergence": convergence(tmp, a.changes, lambda: bar.advance(ta))}
        res["builds"] = builds(a.models, a.endpoints, a.repeats, lambda: bar.advance(tb))
        res["memory"] = memory(tmp, a.models, a.endpoints, a.clients, a.fanout_changes,
                               lambda: bar.advance(td))
    res["targets"] = [{"figure": n, "measured": g, "target": t, "met": g <= t}
                      for n, g, t in verdicts(res)]
    res["meta"] = {"command": "python benchmarks/convergence.py " + " ".join(sys.argv[1:]),
                   "wall_s": round(time.time() - started, 1), "cpus": os.cpu_count(),
                   "python": platform.python_version(), "machine": platform.machine(),
                   "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print_report(res, console)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1) + "\n")
    console.print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
