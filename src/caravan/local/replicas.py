"""The dev stack's replica processes: start, drain, readiness, restart in place, registry.

Replica lifecycle (``ReplicaTable``, the ``ReplicaFleet`` the local autoscaler scales)::

    starting ──ModelReady──► registered(HEALTHY) ──scale_to(down)──► DRAINING ──grace──► SIGTERM ──► gone
                                     └──ModelReady false (engine died, model unloaded)──► unregistered,
                                        restarted in place (same ports) ──ModelReady──► registered

ModelReady, not grpc.health.v1, is the readiness signal (Triton's health is SERVING
again once a dead engine's model is unloaded); it is what the Nomad job's model-ready
check reads in production, so a dead engine leaves Envoy the same way locally, and the
replica is restarted in place as Nomad's ``check_restart`` does.

The registry and Prometheus' targets are published through ``RetryingWriter`` (a failed
write stays pending and is retried); the ``replica-watch`` loop survives any exception.

Thread-safety: ``scale_to`` / ``counts`` / the other queries may be called from any
thread (one lock); ``watch`` runs on the stack's ``replica-watch`` thread.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from caravan.discovery.registry_file import registry_text
from caravan.discovery.types import HealthStatus, Replica
from caravan.local.health import model_ready
from caravan.local.process import ChildProcess, free_port
from caravan.local.secure import LocalSecurity
from caravan.local.stackconfig import StackOptions
from caravan.local.statefile import RetryingWriter
from caravan.triton.launcher import ReplicaPlan

log = logging.getLogger(__name__)

_READY_CHECK_S = 1.0  # how often ready replicas' ModelReady is checked


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


class ReplicaTable:
    """The replica processes of each model of ``security.spec`` (the spec replicas start
    from, with the stack's TLS and credentials), their ports and their registry."""

    def __init__(self, security: LocalSecurity, state_dir: Path, options: StackOptions,
                 ports_taken: set[int], registry_file: RetryingWriter, targets_file: RetryingWriter,
                 stopping: threading.Event) -> None:
        """``ports_taken``: ports already handed out (the stack's own); ``stopping`` set
        means the stack is going down (no restarts)."""
        self.security = security  # the stack's ``_secure`` replaces it before any replica starts
        self.state_dir = state_dir
        self.options = options
        self.registry_file = registry_file
        self.targets_file = targets_file
        self.watch_errors = 0  # exceptions the replica-watch thread survived
        self._stopping = stopping
        self._lock = threading.Lock()
        self._replicas: dict[str, list[_ReplicaProc]] = {m.name: [] for m in security.spec.models}
        self._serial = 0
        self._handed_out = set(ports_taken)
        self._dirty = False  # replica states changed since the last _publish
        self._next_ready_check = 0.0

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

    def pids(self) -> dict[str, int]:
        """The PID of every replica (ready, starting and draining) by id."""
        with self._lock:
            return {rp.replica.id: rp.proc.pid for rps in self._replicas.values() for rp in rps}

    def stop_all(self) -> None:
        """SIGTERM every replica at once, then wait for each (10 s grace); forget them."""
        with self._lock:
            procs = [rp.proc for rps in self._replicas.values() for rp in rps]
            for rps in self._replicas.values():
                rps.clear()
        for p in procs:
            p.signal(signal.SIGTERM)
        for p in procs:
            p.stop(grace_s=10)

    # ---- starting ------------------------------------------------------------------
    def _spawn(self, model: str) -> _ReplicaProc:
        self._serial += 1
        rid = f"{model}-{self._serial}"
        port, mport = self._fresh_port(), self._fresh_port()
        options = replace(self.options.replica, time_scale=self.options.time_scale,
                          tls=self.security.replica_tls.get(model))
        plan = ReplicaPlan(self.state_dir / "replicas" / rid, self.security.spec.model(model), port, mport,
                           options)
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
        """Write the registry (ready replicas, HEALTHY, and draining ones, DRAINING) and
        Prometheus' targets. A failed write stays pending (``RetryingWriter``). Lock held."""
        from caravan.local.prometheus import targets_text

        self._dirty = False
        regs = [rp.replica for rps in self._replicas.values() for rp in rps if rp.ready]
        self.registry_file.publish(registry_text(regs))
        self.targets_file.publish(targets_text(regs))

    # ---- the replica-watch loop ----------------------------------------------------
    def watch(self) -> None:
        """The ``replica-watch`` loop: one ``_watch_once`` every 0.1 s until stopped.
        It never dies: an exception is counted (``watch_errors``), logged (with its
        traceback the first time) and the loop goes on."""
        while not self._stopping.wait(0.1):
            try:
                self._watch_once()
            except Exception:
                self.watch_errors += 1
                log.error("replica-watch: error (%d so far); continuing", self.watch_errors,
                          exc_info=self.watch_errors == 1)

    def _watch_once(self) -> None:
        """Mark replicas ready when their model is; unregister (and stop) ready replicas
        whose model stopped being ready (every ``_READY_CHECK_S``); forget exited ones;
        publish when anything changed (``_dirty`` survives an exception half-way) and
        retry state files a failed write left pending."""
        self.registry_file.retry()
        self.targets_file.retry()
        with self._lock:
            self._dirty = self._reap() or self._dirty
        for rp in self._pending():
            if self._model_ready(rp):
                with self._lock:
                    rp.ready = self._dirty = True
                log.info("replica ready", extra={"replica": rp.replica.id})
        if time.monotonic() >= self._next_ready_check:
            self._next_ready_check = time.monotonic() + _READY_CHECK_S
            if self._drop_unready():
                self._dirty = True
        with self._lock:
            if self._dirty:
                self._publish()

    def _drop_unready(self) -> bool:
        """Unregister every ready replica whose model is no longer ready and restart it in
        place (same ports), as Nomad's ``check_restart`` does with the model-ready check."""
        with self._lock:
            ready = [rp for rps in self._replicas.values() for rp in rps
                     if rp.ready and not rp.draining and rp.proc.alive()]
        dropped = False
        for rp in ready:
            if not self._model_ready(rp):
                log.warning("replica's model is not ready (engine died?): unregistered, restarting",
                            extra={"replica": rp.replica.id, "model": rp.replica.model})
                with self._lock:
                    rp.ready, rp.restarting, dropped = False, True, True
                threading.Thread(target=self._restart, args=(rp,), name="replica-restart", daemon=True).start()
        return dropped

    def _restart(self, rp: _ReplicaProc) -> None:
        rp.proc.stop(grace_s=10)
        with self._lock:
            if not self._stopping.is_set() and not rp.draining:
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

    def _model_ready(self, rp: _ReplicaProc) -> bool:
        return model_ready(rp.replica.endpoint, rp.replica.model, timeout_s=0.5,
                           credentials=self.security.probe.replica(rp.replica.model))
