"""Stack helpers for the fault scenarios (test code, also used by
``benchmarks/reliability.py``): a small spec on free ports, the local stack
(``LocalStack``: real replicas, ``caravan xds --registry``, real Envoy), and probes of
Envoy's admin API and the control plane's admin API.

Every process is owned (``ChildProcess``) and ended by PID. Every wait is bounded.
Times are seconds (``time.monotonic()``).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from caravan.discovery.local import write_registry
from caravan.discovery.types import Replica
from caravan.local.health import grpc_serving
from caravan.local.process import ChildProcess, caravan_argv, free_port, venv_binary
from caravan.local.supervisor import LocalPorts, LocalStack, StackOptions
from caravan.spec import PlatformSpec, parse_spec

MODEL = "alpha"
CLUSTER = f"model-{MODEL}"
ENVOY_NODE = "caravan-local"  # LocalStack's Envoy node id
TYPES = ("cds", "eds", "lds", "rds")


def fault_spec(replicas: int = 3, retries: int = 2) -> PlatformSpec:
    """One model, ``replicas`` replicas (room for one more), fast debounce."""
    return parse_spec({
        "models": [{
            "name": MODEL, "engine": {"model": f"m/{MODEL}", "max_model_len": 4096},
            "replicas": {"min": 1, "initial": replicas, "max": replicas + 1},
            "routing": {"maglev_table_size": 1031, "retries": retries, "unary_timeout_s": 10},
        }],
        "control_plane": {"debounce_quiet_ms": 20, "debounce_max_ms": 200},
    }, "faults")


def start_local_stack(tmp: Path, replicas: int = 3, time_scale: float = 0.01,
                      replica_args: tuple[str, ...] = (), drain_grace_s: float = 1.0,
                      ) -> LocalStack:
    """A started ``LocalStack`` (every replica serving through Envoy) on free ports."""
    args = ("--mean-output-tokens", "4", "--stream-interval-ms", "20", "--drain-timeout-s", "10",
            "--log-level", "WARNING", *replica_args)
    opts = StackOptions(time_scale=time_scale, prometheus=False, replica_args=args,
                        drain_grace_s=drain_grace_s, ready_timeout_s=60)
    stack = LocalStack(fault_spec(replicas), tmp, LocalPorts.free(), opts).start()
    try:
        wait_until(lambda: len(stack.replicas(MODEL)) == replicas, 30, "replicas registered")
        want = {r.endpoint for r in stack.replicas(MODEL)}
        wait_until(lambda: serving_hosts(stack.ports.envoy_admin) == want, 30,
                   "Envoy serving every replica")
    except BaseException:
        stack.stop()
        raise
    return stack


def infra(stack: LocalStack, name: str) -> ChildProcess:
    """The stack's infrastructure child called ``name`` ("xds", "envoy")."""
    return next(p for p in stack._infra if p.name == name)


def restart_infra(stack: LocalStack, old: ChildProcess) -> ChildProcess:
    """Start ``old``'s command again (same ports, same log) as a new owned child."""
    old.stop(grace_s=1)
    fresh = ChildProcess(old.name, old.argv, old.log_path).start()
    stack._infra[stack._infra.index(old)] = fresh
    return fresh


# ------------------------------------------------------------------------ HTTP probes


def http_get(port: int, path: str, timeout_s: float = 2.0) -> tuple[int, str]:
    """GET http://127.0.0.1:port/path -> (status, body); HTTP errors are returned."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode()


def envoy_hosts(admin_port: int, cluster: str = CLUSTER) -> dict[str, str]:
    """{"host:port": health_flags} of ``cluster`` from Envoy's /clusters."""
    _, text = http_get(admin_port, "/clusters")
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == cluster and parts[2] == "health_flags":
            out[parts[1]] = parts[3]
    return out


def serving_hosts(admin_port: int, cluster: str = CLUSTER) -> set[str]:
    """Hosts Envoy sends new requests to (health flags exactly ``healthy``)."""
    return {h for h, f in envoy_hosts(admin_port, cluster).items() if f == "healthy"}


def envoy_versions(admin_port: int) -> dict[str, str]:
    """Envoy's own view of the last accepted version per type, from /config_dump."""
    _, text = http_get(admin_port, "/config_dump?include_eds")
    dump = json.loads(text)
    out: dict[str, str] = {}
    for conf in dump.get("configs", []):
        kind = conf.get("@type", "").rsplit(".", 1)[-1]
        if kind == "ClustersConfigDump":
            out["cds"] = conf.get("version_info", "")
        elif kind == "ListenersConfigDump":
            out["lds"] = conf.get("version_info", "")
        elif kind == "RoutesConfigDump":
            dyn = conf.get("dynamic_route_configs", [])
            out["rds"] = dyn[0].get("version_info", "") if dyn else ""
    return out


def cp_json(admin_port: int, path: str) -> Any:
    status, body = http_get(admin_port, path)
    if status != 200:
        raise RuntimeError(f"GET :{admin_port}{path} -> {status}: {body[:200]}")
    return json.loads(body)


def cp_metric(admin_port: int, name: str, labels: str = "") -> float:
    """Sum of the samples of ``name`` (whose label text contains ``labels``) on /metrics."""
    _, text = http_get(admin_port, "/metrics")
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " ") \
                and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def envoy_client(admin_port: int, node: str = ENVOY_NODE) -> dict[str, Any] | None:
    """The control plane's /debug/clients entry of Envoy ``node`` (None if not connected)."""
    for c in cp_json(admin_port, "/debug/clients"):
        if c.get("node_id") == node:
            return dict(c)
    return None


def envoy_in_sync(cp_admin: int, envoy_admin: int) -> bool:
    """True when Envoy's /config_dump holds the control plane's current CDS and LDS
    versions. (A reconnecting Envoy that already has a version gets no push and so sends
    no new ACK: /config_dump, not /debug/clients, is the evidence.)"""
    snap = cp_json(cp_admin, "/debug/snapshot")
    have = envoy_versions(envoy_admin)
    return all(have.get(t) == snap[t]["version"] for t in ("cds", "lds"))


def wait_until(pred: Callable[[], bool], timeout_s: float, what: str,
               every_s: float = 0.02) -> float:
    """Poll ``pred`` until true; returns the monotonic time it became true. TimeoutError
    naming ``what`` (and the last error) after ``timeout_s``; exceptions count as false."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if pred():
                return time.monotonic()
        except Exception as exc:
            last = exc
        time.sleep(every_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r})")


# ------------------------------------------------------------------------ manual stack


class ManualStack:
    """Real replicas + ``caravan xds --registry FILE`` + real Envoy, where the test
    writes the registry itself (so a killed replica stays registered, as it does in
    Consul until its check fails, and a bad entry can be published on purpose)."""

    def __init__(self, tmp: Path, replicas: int = 3, time_scale: float = 0.01,
                 replica_args: tuple[str, ...] = ()) -> None:
        self.tmp = tmp
        self.ports = LocalPorts.free()
        self.spec = self.ports.apply(fault_spec(replicas))
        self.registry_path = tmp / "registry.json"
        self.time_scale = time_scale
        self.replica_args = replica_args
        self.procs: dict[str, ChildProcess] = {}
        self.registered: dict[str, Replica] = {}
        self._infra: list[ChildProcess] = []
        self._serial = 0
        self._initial = replicas
        self._taken = set(vars(self.ports).values())

    def _port(self) -> int:
        """A free port not handed out before in this stack: ``free_port`` alone may return
        a port chosen for a child that has not bound it yet (Envoy's admin, say)."""
        for _ in range(100):
            port = free_port()
            if port not in self._taken:
                self._taken.add(port)
                return port
        raise RuntimeError("no fresh free port after 100 tries")

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.ports.envoy_listen}"

    def start(self) -> ManualStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        import yaml

        from caravan.render.envoy import bootstrap

        spec_path = self.tmp / "platform.yaml"
        spec_path.write_text(yaml.safe_dump(self.spec.model_dump(mode="json"), sort_keys=False))
        reps = [self.start_replica() for _ in range(self._initial)]
        for r in reps:
            wait_until(lambda r=r: grpc_serving(r.endpoint), 30, f"{r.id} serving")
        self.publish(reps)
        xds = caravan_argv("xds", "--spec", str(spec_path), "--registry", str(self.registry_path),
                           "--port", str(self.ports.xds), "--admin-port", str(self.ports.xds_admin))
        self._infra.append(ChildProcess("xds", xds, self.tmp / "logs" / "xds.log").start())
        wait_until(lambda: http_get(self.ports.xds_admin, "/readyz")[0] == 200, 30, "xds ready")
        boot = self.tmp / "envoy.yaml"
        boot.write_text(yaml.safe_dump(bootstrap(self.spec, [("127.0.0.1", self.ports.xds)],
                                                 node_id=ENVOY_NODE)))
        envoy = [venv_binary("envoy"), "-c", str(boot), "--use-dynamic-base-id",
                 "--concurrency", "1", "--log-level", "warning", "--drain-time-s", "1"]
        self._infra.append(ChildProcess("envoy", envoy, self.tmp / "logs" / "envoy.log").start())
        want = {r.endpoint for r in reps}
        wait_until(lambda: serving_hosts(self.ports.envoy_admin) == want, 30, "Envoy serving")

    def start_replica(self) -> Replica:
        """Start one more replica process (not registered yet)."""
        self._serial += 1
        rid = f"{MODEL}-{self._serial}"
        port, mport = self._port(), self._port()
        argv = caravan_argv("replica", "--model", MODEL, "--port", str(port), "--metrics-port",
                            str(mport), "--replica-id", rid, "--time-scale", str(self.time_scale),
                            "--mean-output-tokens", "4", "--stream-interval-ms", "20",
                            "--log-level", "WARNING", *self.replica_args)
        self.procs[rid] = ChildProcess(rid, argv, self.tmp / "logs" / f"{rid}.log").start()
        return Replica(id=rid, model=MODEL, address="127.0.0.1", port=port, metrics_port=mport)

    def publish(self, replicas: list[Replica]) -> None:
        """Atomically replace the registry with ``replicas``."""
        self.registered = {r.id: r for r in replicas}
        write_registry(self.registry_path, replicas)

    def stop(self) -> None:
        for p in list(self.procs.values()) + list(reversed(self._infra)):
            p.stop(grace_s=5)
