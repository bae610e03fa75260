"""Harness for the Consul end-to-end tests. Test code only.

The stack, all on 127.0.0.1 with free ports:

    ConsulFake (thread in this process)
      -> ``caravan xds --consul`` control planes (subprocesses, one or more)
      -> a real Envoy (``.venv/bin/envoy``) whose bootstrap lists every control plane
      -> real replicas (``tritonserver`` with the simulated vLLM engine), registered in
         the fake as ``triton-<model>`` with ``Meta.metrics_port``.

Every process is started through ``caravan.local.launch`` (a ``Launcher`` owns them
and stops them by PID). Every wait polls a condition (Envoy admin, control-plane admin)
with a bounded timeout. Which replica served a request is the ``host:port`` Envoy
names in ``x-caravan-upstream``. Times are in seconds unless a name says ``_ms``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from tests.fakes.consul import ConsulFake as ConsulFake

from caravan.local.launch import Launcher, RunningReplica, control_plane_ready, http_get, stream_request
from caravan.local.launch import envoy_hosts as envoy_hosts
from caravan.local.launch import serving_hosts as serving_hosts
from caravan.local.launch import wait_until as wait_until
from caravan.local.process import ChildProcess, free_port
from caravan.spec import PlatformSpec, parse_spec
from caravan.triton.launcher import ReplicaOptions

SERVICE_PREFIX = "triton-"
REPLICA_OPTIONS = ReplicaOptions(time_scale=0.01, stream_interval_ms=0, exit_timeout_s=10)


def get_json(port: int, path: str) -> Any:
    status, body = http_get(port, path)
    if status != 200:
        raise RuntimeError(f"GET :{port}{path} -> {status}: {body[:200]}")
    return json.loads(body)


# ---------------------------------------------------------------------------- spec


def make_spec(consul_address: str, models: Sequence[str] = ("alpha",), quiet_ms: int = 20,
              max_ms: int = 200) -> PlatformSpec:
    """A small spec on free ports whose control plane watches ``consul_address``."""
    return parse_spec({
        "default_model": models[0],
        "models": [{"name": m, "engine": {"model": f"m/{m}"},
                    "routing": {"maglev_table_size": 1031, "retries": 1, "unary_timeout_s": 10}}
                   for m in models],
        "envoy": {"listen_port": free_port(), "admin_port": free_port()},
        "control_plane": {"xds_port": free_port(), "admin_port": free_port(),
                          "debounce_quiet_ms": quiet_ms, "debounce_max_ms": max_ms},
        "consul": {"address": consul_address, "wait_s": 5, "timeout_s": 2},
    }, "e2e-consul")


def write_spec(spec: PlatformSpec, path: Path) -> Path:
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    return path


# ---------------------------------------------------------------------------- replicas


def start_replicas(launcher: Launcher, model: str, ids: Sequence[str]) -> dict[str, RunningReplica]:
    """Fast replicas of ``model`` (time scale 0.01), one per id, all ready."""
    return {r.id: r for r in launcher.replicas(ids, model, REPLICA_OPTIONS)}


def register(fake: ConsulFake, r: RunningReplica) -> None:
    """Register ``r`` as Nomad would: service ``triton-<model>``, passing check, meta."""
    fake.register(f"{SERVICE_PREFIX}{r.model}", r.id, port=r.port, address="127.0.0.1",
                  meta={"metrics_port": str(r.metrics_port), "model": r.model})


# ---------------------------------------------------------------------------- control plane


@dataclass
class ControlPlaneProc:
    """One ``caravan xds --consul`` subprocess."""

    name: str
    xds_port: int
    admin_port: int
    proc: ChildProcess

    def snapshot(self) -> dict[str, Any]:
        data = get_json(self.admin_port, "/debug/snapshot")
        assert isinstance(data, dict)
        return data

    def clients(self) -> list[dict[str, Any]]:
        data = get_json(self.admin_port, "/debug/clients")
        assert isinstance(data, list)
        return data

    def ready(self) -> bool:
        return control_plane_ready(self.admin_port)

    def metric(self, name: str) -> float:
        """Sum of every sample of metric ``name`` on /metrics (0 when absent)."""
        _, text = http_get(self.admin_port, "/metrics")
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
                total += float(line.rsplit(" ", 1)[1])
        return total


def start_control_plane(launcher: Launcher, spec_path: Path, name: str, xds_port: int,
                        admin_port: int) -> ControlPlaneProc:
    """``caravan xds --consul`` as node ``name``; returns once its ADS port listens."""
    proc = launcher.control_plane(spec_path, port=xds_port, admin_port=admin_port, consul=True,
                                  node_id=name, name=name)
    return ControlPlaneProc(name, xds_port, admin_port, proc)


def wait_ready(cp: ControlPlaneProc, timeout_s: float = 20) -> None:
    wait_until(cp.ready, timeout_s, f"{cp.name} /readyz", procs=[cp.proc])


# ---------------------------------------------------------------------------- traffic


def infer(url: str, model: str, session: str, channel: grpc.Channel | None = None) -> str:
    """One stream=false request through Envoy with its own session; returns the replica
    (``host:port`` from ``x-caravan-upstream``) that served it. AssertionError when the
    request failed."""
    reply = stream_request(url, model, {"x-model": model, "x-session-id": session},
                           request_id=session, channel=channel)
    assert reply.ok, f"request {session}: {reply.outcome} {reply.message}"
    return reply.upstream


def spread(url: str, model: str, n: int, tag: str) -> Counter[str]:
    """``n`` requests with distinct sessions -> how many each replica (host:port) served."""
    with grpc.insecure_channel(url) as ch:
        return Counter(infer(url, model, f"{tag}-{i}", ch) for i in range(n))


def first_served_by(url: str, model: str, endpoint: str, max_requests: int, tag: str) -> int:
    """Send requests with distinct sessions until the replica at ``endpoint`` serves one;
    returns how many were sent. AssertionError if it served none of ``max_requests``."""
    with grpc.insecure_channel(url) as ch:
        for i in range(1, max_requests + 1):
            if infer(url, model, f"{tag}-{i}", ch) == endpoint:
                return i
    raise AssertionError(f"{endpoint} served none of {max_requests} requests")


@dataclass
class Traffic:
    """A background loop of stream=false requests through Envoy, bounded by
    ``max_requests`` and ``max_s``. Thread-safe reads of the counters via ``total()``."""

    url: str
    model: str
    max_requests: int = 2000
    max_s: float = 30.0
    ok: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, name="e2e-traffic", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_s
        with grpc.insecure_channel(self.url) as ch:
            for i in range(self.max_requests):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                reply = stream_request(self.url, self.model, {"x-model": self.model,
                                                              "x-session-id": f"traffic-{i}"},
                                       request_id=str(i), channel=ch)
                with self._lock:
                    if reply.ok:
                        self.ok[reply.upstream] += 1
                    else:
                        self.errors.append(f"request {i}: {reply.outcome} {reply.message}")

    def total(self) -> int:
        with self._lock:
            return sum(self.ok.values()) + len(self.errors)

    def stop(self) -> tuple[Counter[str], list[str]]:
        """Stop the loop and return (served per replica host:port, error messages)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)
        with self._lock:
            return Counter(self.ok), list(self.errors)
