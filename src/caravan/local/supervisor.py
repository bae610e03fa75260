"""``caravan up``: the whole serving stack on 127.0.0.1, as child processes we own.

::

    LocalStack.start()
      ├─ replicas   tritonserver + simulated vLLM engine (caravan.triton; N per model,
      │             registered when the model is ready)
      ├─ registry   .caravan/registry.json          (the local ReplicaSource, written atomically)
      ├─ xds        caravan xds --registry ...      (real control plane, ADS on ports.xds)
      ├─ envoy      envoy -c .caravan/envoy/envoy.yaml (real Envoy, bootstrap from render.envoy)
      └─ prometheus /usr/bin/prometheus (when installed)
    LocalStack.stop()  drains and ends every child by PID, newest first

Replica lifecycle (``ReplicaFleet``, used by the local autoscaler)::

    starting ──ModelReady──► registered(HEALTHY) ──scale_to(down)──► DRAINING ──grace──► SIGTERM ──► gone
                                     └──ModelReady false (engine died, model unloaded)──► unregistered,
                                        restarted in place (same ports) ──ModelReady──► registered

ModelReady, not grpc.health.v1, is the readiness signal (Triton's health is SERVING
again once a dead engine's model is unloaded); it is what the Nomad job's model-ready
check reads in production, so a dead engine leaves Envoy the same way locally, and the
replica is restarted in place as Nomad's ``check_restart`` does.

Thread-safety: ``scale_to`` / ``counts`` may be called from any thread (one lock);
``start`` / ``stop`` from the owning thread only.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from caravan.discovery.local import write_registry
from caravan.discovery.types import HealthStatus, Replica
from caravan.errors import BackendError
from caravan.local.health import infer_once, model_ready
from caravan.local.launch import (
    ChildExited,
    start_control_plane,
    start_envoy,
    start_listening,
    wait_until,
    write_envoy_bootstrap,
)
from caravan.local.process import ChildProcess, free_port, port_open, venv_binary
from caravan.spec import PlatformSpec
from caravan.triton.launcher import ReplicaOptions, ReplicaPlan

log = logging.getLogger(__name__)

_READY_CHECK_S = 1.0  # how often ready replicas' ModelReady is checked


@dataclass(frozen=True)
class LocalPorts:
    """Every port the local stack listens on (all on 127.0.0.1)."""

    envoy_listen: int
    envoy_admin: int
    xds: int
    xds_admin: int
    prometheus: int

    @classmethod
    def from_spec(cls, spec: PlatformSpec) -> LocalPorts:
        return cls(spec.envoy.listen_port, spec.envoy.admin_port, spec.control_plane.xds_port,
                   spec.control_plane.admin_port, spec.local.prometheus_port)

    @classmethod
    def free(cls) -> LocalPorts:
        """Fresh OS-chosen ports, for tests running side by side."""
        return cls(free_port(), free_port(), free_port(), free_port(), free_port())

    def apply(self, spec: PlatformSpec) -> PlatformSpec:
        """The spec with these ports and loopback addresses (what the children are given)."""
        envoy = spec.envoy.model_copy(update={"address": "127.0.0.1", "listen_port": self.envoy_listen,
                                              "admin_port": self.envoy_admin})
        cp = spec.control_plane.model_copy(update={"address": "127.0.0.1", "xds_port": self.xds,
                                                   "admin_port": self.xds_admin})
        return spec.model_copy(update={"envoy": envoy, "control_plane": cp})


@dataclass(frozen=True)
class StackOptions:
    """What varies between `caravan up`, `caravan demo` and tests."""

    time_scale: float = 0.1  # the replicas' (overrides replica.time_scale)
    prometheus: bool = True
    replica: ReplicaOptions = field(default_factory=ReplicaOptions)
    drain_grace_s: float = 1.0  # DRAINING in Envoy before SIGTERM
    ready_timeout_s: float = 60.0


@dataclass
class _ReplicaProc:
    replica: Replica
    proc: ChildProcess
    plan: ReplicaPlan
    ready: bool = False
    draining: bool = False
    restarting: bool = False
    restarts: int = 0
    started_at: float = field(default_factory=time.monotonic)


class StackError(BackendError, RuntimeError):
    """The local stack could not start; the message names the component and its log."""


class LocalStack:
    """The local serving stack. Use as a context manager, or call start()/stop()."""

    def __init__(self, spec: PlatformSpec, state_dir: Path, ports: LocalPorts,
                 options: StackOptions = StackOptions()) -> None:
        self.spec = ports.apply(spec)
        self.state_dir = state_dir.resolve()
        self.ports = ports
        self.options = options
        self._lock = threading.Lock()
        self._replicas: dict[str, list[_ReplicaProc]] = {m.name: [] for m in self.spec.models}
        self._serial = 0
        self._handed_out: set[int] = set(vars(ports).values())
        self._infra: list[ChildProcess] = []
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # ---- paths and endpoints -------------------------------------------------
    @property
    def registry_path(self) -> Path:
        return self.state_dir / "registry.json"

    @property
    def spec_path(self) -> Path:
        return self.state_dir / "platform.yaml"

    @property
    def endpoint(self) -> str:
        """Envoy's gRPC inference endpoint, host:port."""
        return f"127.0.0.1:{self.ports.envoy_listen}"

    @property
    def prometheus_url(self) -> str | None:
        running = any(p.name == "prometheus" and p.alive() for p in self._infra)
        return f"http://127.0.0.1:{self.ports.prometheus}" if running else None

    # ---- lifecycle ---------------------------------------------------------------
    def start(self) -> LocalStack:
        """Start everything; return once a request through Envoy succeeds for every model.
        Raises StackError (after stopping what it started) on failure."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self._check_ports_free()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        self.spec_path.write_text(yaml.safe_dump(self.spec.model_dump(mode="json"), sort_keys=False))
        write_registry(self.registry_path, [])
        for m in self.spec.models:
            self.scale_to(m.name, m.replicas.start)
        self._start_control_plane()
        self._start_envoy()
        if self.options.prometheus:
            self._start_prometheus()
        self._watcher = threading.Thread(target=self._watch, name="replica-watch", daemon=True)
        self._watcher.start()
        self._wait_serving()

    def stop(self) -> None:
        """End every child we started (replicas first, then infra, newest first)."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(5)
        with self._lock:
            procs = [rp.proc for rps in self._replicas.values() for rp in rps]
            for rps in self._replicas.values():
                rps.clear()
        for p in procs:
            p.signal(signal.SIGTERM)
        for p in procs + list(reversed(self._infra)):
            p.stop(grace_s=10)
        self._infra.clear()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- ReplicaFleet --------------------------------------------------------------
    def counts(self, model: str) -> tuple[int, int]:
        """(ready, starting) replicas of ``model``; draining ones count as neither."""
        with self._lock:
            live = [rp for rp in self._replicas[model] if not rp.draining]
            ready = sum(rp.ready for rp in live)
            return ready, len(live) - ready

    def scale_to(self, model: str, count: int) -> None:
        """Start replicas, or drain the newest ones, until ``model`` has ``count`` live replicas.
        Draining: DRAINING in the registry (Envoy stops new requests), then SIGTERM after
        ``drain_grace_s`` (the replica finishes in-flight requests and exits)."""
        if count < 0:
            raise ValueError(f"count: must be >= 0, got {count}")
        with self._lock:
            live = [rp for rp in self._replicas[model] if not rp.draining]
            for _ in range(count - len(live)):
                self._replicas[model].append(self._spawn(model))
            for rp in sorted(live, key=lambda r: r.started_at)[count:]:
                rp.draining = True
                rp.replica = replace(rp.replica, health=HealthStatus.DRAINING)
                threading.Timer(self.options.drain_grace_s, rp.proc.signal,
                                args=(signal.SIGTERM,)).start()
            self._publish()

    def replicas(self, model: str) -> list[Replica]:
        """The registered (ready) replicas of ``model``."""
        with self._lock:
            return [rp.replica for rp in self._replicas[model] if rp.ready]

    def replica_plans(self, model: str) -> list[ReplicaPlan]:
        """How each live replica of ``model`` was started (ports, fault file), oldest first."""
        with self._lock:
            return [rp.plan for rp in self._replicas[model] if not rp.draining]

    def replica_pid(self, replica_id: str) -> int:
        """The process id of a replica (tests send it signals). KeyError if unknown."""
        with self._lock:
            for rps in self._replicas.values():
                for rp in rps:
                    if rp.replica.id == replica_id:
                        return rp.proc.pid
        raise KeyError(replica_id)

    def infra(self, name: str) -> ChildProcess:
        """The stack's own child called ``name`` ("xds", "envoy", "prometheus"); tests
        send it signals. KeyError if there is none."""
        for p in self._infra:
            if p.name == name:
                return p
        raise KeyError(name)

    def restart_infra(self, name: str, grace_s: float = 1.0) -> ChildProcess:
        """Stop the child ``name`` if it still runs, then start its command again (same
        argv, ports and log) as a new owned child; returns it without waiting."""
        old = self.infra(name)
        old.stop(grace_s=grace_s)
        fresh = ChildProcess(old.name, old.argv, old.log_path, old.env).start()
        self._infra[self._infra.index(old)] = fresh
        return fresh

    def pids(self) -> dict[str, int]:
        """The PID of every child this stack runs: infrastructure by name, replicas
        (ready, starting and draining) by id."""
        with self._lock:
            out = {p.name: p.pid for p in self._infra if p.proc is not None}
            out.update((rp.replica.id, rp.proc.pid) for rps in self._replicas.values() for rp in rps)
            return out

    # ---- internals -------------------------------------------------------------------
    def _spawn(self, model: str) -> _ReplicaProc:
        self._serial += 1
        rid = f"{model}-{self._serial}"
        port, mport = self._fresh_port(), self._fresh_port()
        options = replace(self.options.replica, time_scale=self.options.time_scale)
        plan = ReplicaPlan(self.state_dir / "replicas" / rid, self.spec.model(model), port, mport, options)
        proc = plan.start(self.state_dir / "logs" / f"replica-{rid}.log")
        log.info("replica starting", extra={"replica": rid, "port": port, "metrics_port": mport})
        rep = Replica(id=rid, model=model, address="127.0.0.1", port=port, metrics_port=mport)
        return _ReplicaProc(rep, proc, plan)

    def _fresh_port(self) -> int:
        """A free port not already handed to another child (the OS may offer a port
        that was picked for a process which has not bound it yet). Lock held."""
        while True:
            port = free_port()
            if port not in self._handed_out:
                self._handed_out.add(port)
                return port

    def _publish(self) -> None:
        """Write the registry: ready replicas (HEALTHY) and draining ones (DRAINING). Lock held."""
        regs = [rp.replica for rps in self._replicas.values() for rp in rps if rp.ready]
        write_registry(self.registry_path, regs)
        self._write_prometheus_targets()

    def _watch(self) -> None:
        """Mark replicas ready when their model is; unregister (and stop) ready replicas
        whose model stopped being ready; forget exited ones. Ready replicas are
        checked every ``_READY_CHECK_S``."""
        next_check = 0.0
        while not self._stop.wait(0.1):
            with self._lock:
                changed = self._reap()
            for rp in self._pending():
                if model_ready(rp.replica.endpoint, rp.replica.model, timeout_s=0.5):
                    with self._lock:
                        rp.ready = changed = True
                    log.info("replica ready", extra={"replica": rp.replica.id})
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + _READY_CHECK_S
                changed = self._drop_unready() or changed
            if changed:
                with self._lock:
                    self._publish()

    def _drop_unready(self) -> bool:
        """Unregister every ready replica whose model is no longer ready and restart it in
        place (same ports), as Nomad's ``check_restart`` does with the model-ready check."""
        with self._lock:
            ready = [rp for rps in self._replicas.values() for rp in rps
                     if rp.ready and not rp.draining and rp.proc.alive()]
        dropped = False
        for rp in ready:
            if not model_ready(rp.replica.endpoint, rp.replica.model, timeout_s=0.5):
                log.warning("replica's model is not ready (engine died?): unregistered, restarting",
                            extra={"replica": rp.replica.id, "model": rp.replica.model})
                with self._lock:
                    rp.ready, rp.restarting, dropped = False, True, True
                threading.Thread(target=self._restart, args=(rp,), name="replica-restart", daemon=True).start()
        return dropped

    def _restart(self, rp: _ReplicaProc) -> None:
        rp.proc.stop(grace_s=10)
        with self._lock:
            if not self._stop.is_set() and not rp.draining:
                log_path = self.state_dir / "logs" / f"replica-{rp.replica.id}.log"
                rp.proc = rp.plan.start(log_path)
                rp.restarts += 1
            rp.restarting = False

    def _pending(self) -> list[_ReplicaProc]:
        with self._lock:
            return [rp for rps in self._replicas.values() for rp in rps
                    if not rp.ready and not rp.draining and not rp.restarting and rp.proc.alive()]

    def _reap(self) -> bool:
        changed = False
        for model, rps in self._replicas.items():
            for rp in [r for r in rps if not r.restarting and not r.proc.alive()]:
                rps.remove(rp)
                rp.proc.stop()
                changed = True
                level = logging.INFO if rp.draining else logging.WARNING
                log.log(level, "replica exited", extra={"replica": rp.replica.id, "model": model,
                                                        "code": rp.proc.proc.returncode if rp.proc.proc else None})
        return changed

    def _start_control_plane(self) -> None:
        self._infra_up("xds", lambda: start_control_plane(
            self.spec_path, self._log("xds"), port=self.ports.xds, admin_port=self.ports.xds_admin,
            registry=self.registry_path))

    def _start_envoy(self) -> None:
        config = write_envoy_bootstrap(self.state_dir / "envoy" / "envoy.yaml", self.spec,
                                       [("127.0.0.1", self.ports.xds)], node_id="caravan-local",
                                       cluster="caravan")
        self._infra_up("envoy", lambda: start_envoy(config, self._log("envoy"),
                                                    admin_port=self.ports.envoy_admin))

    def _start_prometheus(self) -> None:
        from caravan.local.prometheus import prometheus_argv, write_local_config

        try:
            binary = venv_binary("prometheus")
        except FileNotFoundError:
            log.warning("prometheus not installed; skipping (apt-get install -y prometheus)")
            return
        config = write_local_config(self.state_dir / "prometheus", self.spec, self.ports)
        argv = prometheus_argv(binary, config, self.state_dir / "prometheus" / "data", self.ports.prometheus)
        self._launch("prometheus", argv, self.ports.prometheus)

    def _write_prometheus_targets(self) -> None:
        from caravan.local.prometheus import write_replica_targets

        regs = [rp.replica for rps in self._replicas.values() for rp in rps if rp.ready]
        write_replica_targets(self.state_dir / "prometheus", regs)

    def _launch(self, name: str, argv: Sequence[str], port: int) -> None:
        self._infra_up(name, lambda: start_listening(name, argv, self._log(name), port))

    def _infra_up(self, name: str, start: Callable[[], ChildProcess]) -> None:
        """Run ``start`` (it returns a listening child or raises); keep the child.
        StackError naming ``name`` and its log when it fails."""
        try:
            self._infra.append(start())
        except (ChildExited, TimeoutError) as exc:
            raise StackError(f"{name} did not start: {exc}") from exc

    def _log(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def _check_ports_free(self) -> None:
        for name, port in vars(self.ports).items():
            if port_open("127.0.0.1", port):
                raise StackError(f"port {port} ({name}) is already in use on 127.0.0.1; "
                                 "stop what uses it or change the port in the spec")

    def _all_ready(self, model: str, count: int) -> bool:
        return self.counts(model) == (count, 0)

    def _wait_serving(self) -> None:
        """Until every model's initial replicas are ready and a request for it succeeds
        through Envoy. Raises StackError when that takes longer than ``ready_timeout_s``
        or an infrastructure process exits."""
        infra = list(self._infra)
        for m in self.spec.models:
            want = m.replicas.start
            probe = functools.partial(infer_once, self.endpoint, m.name, model_header=self.spec.envoy.model_header)
            try:
                wait_until(functools.partial(self._all_ready, m.name, want),
                           self.options.ready_timeout_s, f"{want} ready replica(s) of model {m.name!r}",
                           every_s=0.1, procs=infra)
                wait_until(probe, self.options.ready_timeout_s,
                           f"a successful request through Envoy for model {m.name!r}", every_s=0.1,
                           procs=infra)
            except (ChildExited, TimeoutError) as exc:
                raise StackError(str(exc)) from exc
