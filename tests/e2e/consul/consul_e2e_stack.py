"""Harness for the Consul end-to-end tests (and ``benchmarks/convergence.py``). Test code only.

The stack, all on 127.0.0.1 with free ports:

    ConsulFake (thread in this process)
      -> ``caravan xds --consul`` control planes (subprocesses, one or more)
      -> a real Envoy (``.venv/bin/envoy``) whose bootstrap lists every control plane
      -> real ``caravan replica`` processes, registered in the fake as ``triton-<model>``
         with ``Meta.metrics_port``.

Every process is a ``ChildProcess`` stopped by its PID. Every wait polls a condition
(Envoy admin, control-plane admin, replica ids in responses) with a bounded timeout.
Times are in seconds unless a name says ``_ms``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import yaml

from caravan.local.process import ChildProcess, caravan_argv, free_port, venv_binary, wait_for_port
from caravan.render.envoy import bootstrap
from caravan.spec import PlatformSpec, parse_spec

# ``tests.fakes`` is imported from the repository root, which ``python -m pytest`` puts on
# sys.path but the ``pytest`` script (and a benchmark run as a script) does not.
REPO_ROOT = Path(__file__).resolve().parents[3]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# Re-exported (``as``), so test modules import it from here, after the path fix.
from tests.fakes.consul import ConsulFake as ConsulFake  # noqa: E402

SERVICE_PREFIX = "triton-"


# ---------------------------------------------------------------------------- waiting


def wait_until(
    pred: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.05
) -> None:
    """Poll ``pred`` until true; TimeoutError naming ``what`` (and the last error) after
    ``timeout_s``. Exceptions from ``pred`` (a port not up yet) count as false."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception as exc:
            last = exc
        time.sleep(every_s)
    raise TimeoutError(
        f"timed out after {timeout_s:.0f}s waiting for {what} (last error: {last!r})"
    )


def http_get(port: int, path: str, timeout_s: float = 2.0) -> tuple[int, str]:
    """GET http://127.0.0.1:port/path -> (status, body); HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode()


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


@dataclass
class ReplicaProc:
    """One real ``caravan replica`` process."""

    id: str
    model: str
    port: int
    metrics_port: int
    proc: ChildProcess

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"


def start_replica(logs: Path, model: str, replica_id: str) -> ReplicaProc:
    """Start (do not wait for) a fast simulated replica: short outputs, time scale 0.01."""
    port, mport = free_port(), free_port()
    argv = caravan_argv("replica", "--model", model, "--port", str(port), "--metrics-port",
                        str(mport), "--replica-id", replica_id, "--time-scale", "0.01",
                        "--mean-output-tokens", "4", "--stream-interval-ms", "0",
                        "--drain-timeout-s", "1", "--log-level", "WARNING")
    proc = ChildProcess(f"replica-{replica_id}", argv, logs / f"{replica_id}.log").start()
    return ReplicaProc(replica_id, model, port, mport, proc)


def register(fake: ConsulFake, r: ReplicaProc) -> None:
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
        return http_get(self.admin_port, "/readyz")[0] == 200

    def metric(self, name: str) -> float:
        """Sum of every sample of metric ``name`` on /metrics (0 when absent)."""
        _, text = http_get(self.admin_port, "/metrics")
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
                total += float(line.rsplit(" ", 1)[1])
        return total


def start_control_plane(logs: Path, spec_path: Path, name: str, xds_port: int,
                        admin_port: int) -> ControlPlaneProc:
    argv = caravan_argv("xds", "--spec", str(spec_path), "--consul", "--port", str(xds_port),
                        "--admin-port", str(admin_port), "--node-id", name)
    proc = ChildProcess(name, argv, logs / f"{name}.log").start()
    return ControlPlaneProc(name, xds_port, admin_port, proc)


def wait_ready(cp: ControlPlaneProc, timeout_s: float = 20) -> None:
    def ready() -> bool:
        if not cp.proc.alive():
            raise RuntimeError(f"{cp.name} exited:\n{cp.proc.tail()}")
        return cp.ready()

    wait_until(ready, timeout_s, f"{cp.name} /readyz")


# ---------------------------------------------------------------------------- Envoy


def start_envoy(logs: Path, spec: PlatformSpec, xds: Sequence[tuple[str, int]],
                node_id: str) -> ChildProcess:
    path = logs / f"envoy-{node_id}.yaml"
    path.write_text(yaml.safe_dump(bootstrap(spec, list(xds), node_id=node_id)))
    argv = [venv_binary("envoy"), "-c", str(path), "--use-dynamic-base-id", "--concurrency", "1",
            "--log-level", "warning", "--drain-time-s", "1"]
    proc = ChildProcess(f"envoy-{node_id}", argv, logs / f"envoy-{node_id}.log").start()
    wait_for_port("127.0.0.1", spec.envoy.admin_port, 20)
    return proc


def envoy_hosts(admin_port: int, cluster: str) -> dict[str, str]:
    """{"host:port": health_flags} of ``cluster`` from Envoy's /clusters."""
    _, text = http_get(admin_port, "/clusters")
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == cluster and parts[2] == "health_flags":
            out[parts[1]] = parts[3]
    return out


def serving_hosts(admin_port: int, cluster: str) -> set[str]:
    """Hosts Envoy would send new requests to (health flags exactly ``healthy``)."""
    return {h for h, flags in envoy_hosts(admin_port, cluster).items() if flags == "healthy"}


# ---------------------------------------------------------------------------- traffic


def _inputs() -> list[grpcclient.InferInput]:
    inp = grpcclient.InferInput("text_input", [1], "BYTES")
    inp.set_data_from_numpy(np.array([b"hello"], dtype=np.object_))
    return [inp]


def infer(client: grpcclient.InferenceServerClient, model: str, session: str) -> str:
    """One unary request through Envoy; returns the ``caravan_replica_id`` that served it.
    Raises ``InferenceServerException`` on failure."""
    result = client.infer(model, _inputs(), headers={"x-model": model, "x-session-id": session},
                          client_timeout=10)
    return str(result.get_response().parameters["caravan_replica_id"].string_param)


def spread(url: str, model: str, n: int, tag: str) -> Counter[str]:
    """``n`` requests with distinct sessions -> how many each replica served."""
    with grpcclient.InferenceServerClient(url) as client:
        return Counter(infer(client, model, f"{tag}-{i}") for i in range(n))


def first_served_by(url: str, model: str, replica_id: str, max_requests: int, tag: str) -> int:
    """Send requests with distinct sessions until ``replica_id`` serves one; returns how many
    were sent. AssertionError if it served none of ``max_requests``."""
    with grpcclient.InferenceServerClient(url) as client:
        for i in range(1, max_requests + 1):
            if infer(client, model, f"{tag}-{i}") == replica_id:
                return i
    raise AssertionError(f"{replica_id} served none of {max_requests} requests")


@dataclass
class Traffic:
    """A background loop of unary requests through Envoy, bounded by ``max_requests`` and
    ``max_s``. Thread-safe reads of the counters via ``snapshot()``."""

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
        with grpcclient.InferenceServerClient(self.url) as client:
            for i in range(self.max_requests):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    rid = infer(client, self.model, f"traffic-{i}")
                except Exception as exc:
                    with self._lock:
                        self.errors.append(f"request {i}: {exc}")
                    continue
                with self._lock:
                    self.ok[rid] += 1

    def total(self) -> int:
        with self._lock:
            return sum(self.ok.values()) + len(self.errors)

    def stop(self) -> tuple[Counter[str], list[str]]:
        """Stop the loop and return (served per replica, error messages)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)
        with self._lock:
            return Counter(self.ok), list(self.errors)
