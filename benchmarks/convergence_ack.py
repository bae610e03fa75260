"""(a) Convergence: a Consul change -> Envoy's ACK of the new EDS version, and -> the
first request the new replica serves (``convergence.py`` describes the run)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from convergence_stack import (
    MAX_MS,
    QUIET_MS,
    REPLICA_OPTIONS,
    ControlPlaneProc,
    consul_fake,
    ms,
    start_control_plane,
    stopping,
    summary,
    write_spec,
)

from caravan.local.launch import Launcher, envoy_hosts, serving_hosts, stream_request, wait_until
from caravan.local.process import free_port
from caravan.spec import PlatformSpec, parse_spec

if TYPE_CHECKING:
    from tests.fakes.consul import ConsulFake

ENVOY_NODE = "bench-envoy"


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
