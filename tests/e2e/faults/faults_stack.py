"""Stack helpers for the fault scenarios (test code): a small spec on free ports, the
local stack (``LocalStack``: real ``tritonserver`` replicas, ``caravan xds --registry``,
real Envoy), a manual stack whose registry the test writes itself, and probes of
Envoy's admin API and the control plane's admin API.

Every process is started through ``caravan.local.launch`` (or ``caravan up``'s
supervisor, which uses it) and ended by PID. Every wait is bounded. Times are seconds
(``time.monotonic()``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from caravan.discovery.registry_file import write_registry
from caravan.discovery.types import Replica
from caravan.local.health import infer_once
from caravan.local.launch import Launcher, RunningReplica, control_plane_ready, http_get
from caravan.local.launch import envoy_hosts as _envoy_hosts
from caravan.local.launch import serving_hosts as _serving_hosts
from caravan.local.launch import wait_until as wait_until
from caravan.local.supervisor import LocalPorts, LocalStack, StackOptions
from caravan.spec import PlatformSpec, parse_spec
from caravan.triton.launcher import ReplicaOptions

MODEL = "alpha"
CLUSTER = f"model-{MODEL}"
ENVOY_NODE = "caravan-local"  # LocalStack's Envoy node id
TYPES = ("cds", "eds", "lds", "rds")
# stream_interval_ms 20: streamed chunks are coalesced (fewer responses to read)
REPLICA = ReplicaOptions(stream_interval_ms=20, exit_timeout_s=10)


def fault_spec(replicas: int = 3, retries: int = 2, hash_balance_factor: int | None = 150) -> PlatformSpec:
    """One model, ``replicas`` replicas (room for one more), fast debounce.
    ``hash_balance_factor`` None: plain Maglev, so a session always lands on the same
    replica whatever the load (a test can aim a request at a replica by its session)."""
    return parse_spec({
        "models": [{
            "name": MODEL, "engine": {"model": f"m/{MODEL}", "max_model_len": 4096},
            "replicas": {"min": 1, "initial": replicas, "max": replicas + 1},
            "routing": {"maglev_table_size": 1031, "retries": retries, "unary_timeout_s": 10,
                        "hash_balance_factor": hash_balance_factor},
        }],
        "control_plane": {"debounce_quiet_ms": 20, "debounce_max_ms": 200},
    }, "faults")


def start_local_stack(tmp: Path, replicas: int = 3, time_scale: float = 0.01,
                      drain_grace_s: float = 1.0) -> LocalStack:
    """A started ``LocalStack`` (every replica serving through Envoy) on free ports."""
    # the control plane is killed and restarted by hand here (never automatically)
    opts = StackOptions(time_scale=time_scale, prometheus=False, replica=REPLICA,
                        drain_grace_s=drain_grace_s, ready_timeout_s=60,
                        auto_restart=frozenset({"envoy"}))
    stack = LocalStack(fault_spec(replicas), tmp, LocalPorts.free(), opts).start()
    try:
        wait_until(lambda: len(stack.replicas(MODEL)) == replicas, 60, "replicas registered")
        want = {r.endpoint for r in stack.replicas(MODEL)}
        wait_until(lambda: serving_hosts(stack.ports.envoy_admin) == want, 30,
                   "Envoy serving every replica")
    except BaseException:
        stack.stop()
        raise
    return stack


# ------------------------------------------------------------------------ HTTP probes


def envoy_hosts(admin_port: int, cluster: str = CLUSTER) -> dict[str, str]:
    """{"host:port": health_flags} of ``cluster`` from Envoy's /clusters."""
    return _envoy_hosts(admin_port, cluster)


def serving_hosts(admin_port: int, cluster: str = CLUSTER) -> set[str]:
    """Hosts Envoy sends new requests to (health flags exactly ``healthy``)."""
    return _serving_hosts(admin_port, cluster)


def envoy_stat(admin_port: int, name: str) -> int:
    """One counter or gauge from Envoy's /stats (0 when absent)."""
    _, text = http_get(admin_port, f"/stats?filter=^{name}$")
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return 0


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


# ------------------------------------------------------------------------ manual stack


class ManualStack:
    """Real replicas + ``caravan xds --registry FILE`` + real Envoy, where the test
    writes the registry itself (so a killed replica stays registered, as it does in
    Consul until its check fails, and a bad entry can be published on purpose)."""

    def __init__(self, tmp: Path, replicas: int = 3, time_scale: float = 0.01,
                 spec: PlatformSpec | None = None) -> None:
        self.tmp = tmp
        self.ports = LocalPorts.free()
        self.spec = self.ports.apply(spec or fault_spec(replicas))
        self.registry_path = tmp / "registry.json"
        self.options = ReplicaOptions(time_scale=time_scale, stream_interval_ms=20, exit_timeout_s=10)
        self.launcher = Launcher(tmp)
        self.replicas: dict[str, RunningReplica] = {}
        self.registered: dict[str, Replica] = {}
        self._serial = 0
        self._initial = replicas

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

        spec_path = self.tmp / "platform.yaml"
        spec_path.write_text(yaml.safe_dump(self.spec.model_dump(mode="json"), sort_keys=False))
        reps = self.start_replicas(self._initial)
        self.publish(reps)
        self.launcher.control_plane(spec_path, port=self.ports.xds, admin_port=self.ports.xds_admin,
                                    registry=self.registry_path, ready=True)
        self.launcher.envoy(self.spec, [("127.0.0.1", self.ports.xds)], node_id=ENVOY_NODE)
        want = {r.endpoint for r in reps}
        wait_until(lambda: serving_hosts(self.ports.envoy_admin) == want, 30, "Envoy serving")
        wait_until(lambda: infer_once(self.endpoint, MODEL), 30, "a request through Envoy answered")

    def start_replicas(self, n: int = 1) -> list[Replica]:
        """Start ``n`` more replicas and wait until they are ready (not registered yet)."""
        ids = []
        for _ in range(n):
            self._serial += 1
            ids.append(f"{MODEL}-{self._serial}")
        started = self.launcher.replicas(ids, MODEL, self.options)
        self.replicas.update((r.id, r) for r in started)
        return [r.registration() for r in started]

    def publish(self, replicas: list[Replica]) -> None:
        """Atomically replace the registry with ``replicas``."""
        self.registered = {r.id: r for r in replicas}
        write_registry(self.registry_path, replicas)

    def replica_at(self, endpoint: str) -> str:
        """The id of the replica listening at ``endpoint`` (host:port)."""
        return next(rid for rid, r in self.replicas.items() if r.endpoint == endpoint)

    def control_plane_ready(self) -> bool:
        return control_plane_ready(self.ports.xds_admin)

    def stop(self) -> None:
        self.launcher.stop()
