"""``caravan up``: the whole serving stack on 127.0.0.1, as child processes we own.

::

    LocalStack.start()
      ├─ lock       .caravan/up.lock                (one stack per state directory: StateLock)
      ├─ replicas   tritonserver + simulated vLLM engine (caravan.triton; N per model,
      │             registered when the model is ready)
      ├─ registry   .caravan/registry.json          (the local ReplicaSource, written atomically)
      ├─ xds        caravan xds --registry ...      (real control plane, ADS on ports.xds)
      ├─ envoy      envoy -c .caravan/envoy/envoy.yaml (real Envoy, bootstrap from render.envoy)
      └─ prometheus /usr/bin/prometheus (when installed)
    LocalStack.stop()  drains and ends every child by PID, newest first, then drops the lock

Failures that must not corrupt or silently stop the stack:

* a second stack on the same state directory: ``StateDirBusy`` naming the first's PID,
  before anything is written or started;
* a state file that cannot be written (a full disk): the registry and Prometheus'
  targets go through ``RetryingWriter`` (injected ``write_text``): the last good file
  stays, the failure is counted and logged once, and the newest content is written as
  soon as the disk accepts it; the ``replica-watch`` thread survives any exception;
* a dead control plane, Envoy or Prometheus: restarted by the ``infra-watch`` thread
  (``caravan.local.infra``: why restarting, not stopping, and when it gives up);
  ``failure()`` / ``wait_failure`` then say why the stack is no longer serving;
* a SIGKILLed supervisor: every child gets SIGTERM from the kernel
  (``PR_SET_PDEATHSIG``, ``caravan.local.process``).

A secured spec (TLS anywhere, API keys, JWT) is backed by a throwaway local PKI and its
probes present the configured credentials (``caravan.local.secure``, ``probe_auth``).

The replicas themselves (start, drain, readiness, restart in place, the registry) are
``caravan.local.replicas.ReplicaTable``; the stack starts them and forwards its
``ReplicaFleet`` methods to it.

Thread-safety: ``scale_to`` / ``counts`` may be called from any thread (one lock);
``start`` / ``stop`` from the owning thread only.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import yaml

from caravan.atomic_file import atomic_write_text
from caravan.discovery.registry_file import registry_text
from caravan.discovery.types import Replica
from caravan.errors import BackendError
from caravan.local.health import infer_once
from caravan.local.infra import INFRA_CHECK_S, InfraSet
from caravan.local.launch import (
    ChildExited,
    start_control_plane,
    start_envoy,
    start_listening,
    wait_until,
    write_envoy_bootstrap,
)
from caravan.local.process import ChildProcess, port_open, venv_binary
from caravan.local.replicas import ReplicaTable
from caravan.local.secure import LocalSecurity, ProbeAuth
from caravan.local.stackconfig import LocalPorts as LocalPorts
from caravan.local.stackconfig import StackOptions as StackOptions
from caravan.local.statefile import RetryingWriter, WriteText
from caravan.local.statelock import StateLock
from caravan.spec import PlatformSpec
from caravan.triton.launcher import ReplicaPlan

log = logging.getLogger(__name__)


class StackError(BackendError, RuntimeError):
    """The local stack could not start; the message names the component and its log."""


class LocalStack:
    """The local serving stack. Use as a context manager, or call start()/stop()."""

    def __init__(self, spec: PlatformSpec, state_dir: Path, ports: LocalPorts,
                 options: StackOptions = StackOptions(), write_text: WriteText = atomic_write_text) -> None:
        """``write_text`` writes the state files the children read (registry, Prometheus
        targets); tests inject a failing disk."""
        from caravan.local.prometheus import TARGETS_FILE

        self.spec = ports.apply(spec)
        self.state_dir = state_dir.resolve()
        self.ports = ports
        self.options = options
        self._infra = InfraSet(options.auto_restart)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._state_lock = StateLock(self.state_dir)
        self.registry_file = RetryingWriter(self.registry_path, write_text)
        self.targets_file = RetryingWriter(self.state_dir / "prometheus" / TARGETS_FILE, write_text)
        self._failure: str | None = None
        self._failed = threading.Event()
        self._security = LocalSecurity(self.spec, ProbeAuth(), {})  # _secure() fills it in
        self._fleet = ReplicaTable(self._security, self.state_dir, options, set(vars(ports).values()),
                                   self.registry_file, self.targets_file, self._stop)

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
        running = any(p.name == "prometheus" and p.alive() for p in self._infra.procs())
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
        self._state_lock.acquire()  # StateDirBusy before anything is written or started
        self._check_ports_free()
        self._secure()
        (self.state_dir / "logs").mkdir(exist_ok=True)
        self.spec_path.write_text(yaml.safe_dump(self.spec.model_dump(mode="json"), sort_keys=False))
        if not self.registry_file.publish(registry_text([])):
            raise StackError(f"cannot write {self.registry_path}: {self.registry_file.last_error}")
        if self.options.prometheus:  # first: it scrapes nothing for ~5 s after it starts
            self._start_prometheus()
        for m in self.spec.models:
            self.scale_to(m.name, m.replicas.start)
        self._start_control_plane()
        self._start_envoy()
        for name, loop in (("replica-watch", self._fleet.watch), ("infra-watch", self._watch_infra)):
            self._threads.append(threading.Thread(target=loop, name=name, daemon=True))
            self._threads[-1].start()
        self._wait_serving()

    def stop(self) -> None:
        """End every child we started (replicas first, then infra, newest first), then
        release the state directory. Idempotent."""
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self._fleet.stop_all()
        self._infra.stop_all(grace_s=10)
        self._state_lock.release()

    def failure(self) -> str | None:
        """Why the stack stopped serving (an infrastructure child that kept dying), or None."""
        return self._failure

    def wait_failure(self, timeout_s: float | None = None) -> str | None:
        """Block until the stack fails (returns why) or ``timeout_s`` passes (None)."""
        self._failed.wait(timeout_s)
        return self._failure

    def infra_restarts(self) -> dict[str, int]:
        """Automatic restarts of each infrastructure child so far."""
        return self._infra.restarts()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- ReplicaFleet (the replicas: ``ReplicaTable``) ------------------------------
    @property
    def watch_errors(self) -> int:
        """Exceptions the replica-watch thread survived."""
        return self._fleet.watch_errors

    def counts(self, model: str) -> tuple[int, int]:
        """(ready, starting) replicas of ``model``; draining ones count as neither."""
        return self._fleet.counts(model)

    def scale_to(self, model: str, count: int) -> None:
        """Start replicas, or drain the newest ones, until ``model`` has ``count`` live
        replicas (``ReplicaTable.scale_to``)."""
        self._fleet.scale_to(model, count)

    def replicas(self, model: str) -> list[Replica]:
        """The registered (ready) replicas of ``model``."""
        return self._fleet.replicas(model)

    def replica_plans(self, model: str) -> list[ReplicaPlan]:
        """How each live replica of ``model`` was started (ports, fault file), oldest first."""
        return self._fleet.replica_plans(model)

    def replica_pid(self, replica_id: str) -> int:
        """The process id of a replica (tests send it signals). KeyError if unknown."""
        return self._fleet.replica_pid(replica_id)

    def infra(self, name: str) -> ChildProcess:
        """The stack's own child called ``name`` ("xds", "envoy", "prometheus"); tests
        send it signals. KeyError if there is none."""
        return self._infra.get(name)

    def restart_infra(self, name: str, grace_s: float = 1.0) -> ChildProcess:
        """Stop the child ``name`` if it still runs, then start its command again (same
        argv, ports and log) as a new owned child; returns it without waiting."""
        return self._infra.restart(name, grace_s)

    def pids(self) -> dict[str, int]:
        """The PID of every child this stack runs: infrastructure by name, replicas
        (ready, starting and draining) by id."""
        out = {p.name: p.pid for p in self._infra.procs() if p.proc is not None}
        out.update(self._fleet.pids())
        return out

    # ---- internals -------------------------------------------------------------------
    def _watch_infra(self) -> None:
        """The ``infra-watch`` loop: restart dead infrastructure children; on a failure
        (one kept dying) record it and stop watching (``wait_failure`` returns it)."""
        while not self._stop.wait(INFRA_CHECK_S):
            try:
                failure = self._infra.check()
            except Exception:
                log.exception("infra-watch: error; continuing")
                continue
            if failure is not None:
                log.error("the local stack is no longer serving: %s", failure)
                self._failure = failure
                self._failed.set()
                return

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
        from caravan.local.prometheus import prometheus_argv, write_stack_config

        try:
            binary = venv_binary("prometheus")
        except FileNotFoundError:
            log.warning("prometheus not installed; skipping (apt-get install -y prometheus)")
            return
        config = write_stack_config(self.state_dir / "prometheus", self.spec, self.ports)
        argv = prometheus_argv(binary, config, self.state_dir / "prometheus" / "data", self.ports.prometheus)
        self._launch("prometheus", argv, self.ports.prometheus)

    def _launch(self, name: str, argv: Sequence[str], port: int) -> None:
        self._infra_up(name, lambda: start_listening(name, argv, self._log(name), port))

    def _infra_up(self, name: str, start: Callable[[], ChildProcess]) -> None:
        """Run ``start`` (it returns a listening child or raises); keep the child.
        StackError naming ``name`` and its log when it fails."""
        try:
            self._infra.add(name, start)
        except (ChildExited, TimeoutError) as exc:
            raise StackError(f"{name} did not start: {exc}") from exc

    def _log(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def _check_ports_free(self) -> None:
        for name, port in vars(self.ports).items():
            if port_open("127.0.0.1", port):
                raise StackError(f"port {port} ({name}) is already in use on 127.0.0.1; "
                                 "stop what uses it or change the port in the spec")

    def _secure(self) -> None:
        """Back the spec's security settings with a local PKI and load the probes'
        credentials (``caravan.local.secure``). StackError naming the field when a
        configured credential cannot be loaded."""
        from caravan.local.secure import localize

        try:
            self._security = localize(self.spec, self.state_dir, os.environ)
        except ValueError as exc:
            raise StackError(f"cannot start a secured stack: {exc}") from None
        self.spec = self._security.spec
        self._fleet.security = self._security

    def probe_envoy(self, model: str, timeout_s: float = 5.0) -> bool:
        """One request for ``model`` through Envoy, with the spec's credentials
        (``infer_once``)."""
        probe = self._security.probe
        return infer_once(self.endpoint, model, timeout_s, self.spec.envoy.model_header,
                          credentials=probe.envoy, metadata=probe.metadata())

    @property
    def probe_auth(self) -> ProbeAuth:
        """The credentials the stack's probes present (TLS, API key or token)."""
        return self._security.probe

    @property
    def pki_dir(self) -> Path | None:
        """Where the local PKI (CA, certificates) lives, when the spec needs one."""
        return None if self._security.pki is None else self._security.pki.directory

    def _all_ready(self, model: str, count: int) -> bool:
        return self.counts(model) == (count, 0)

    def _wait_serving(self) -> None:
        """Until every model's initial replicas are ready and a request for it succeeds
        through Envoy, then (with Prometheus) until Prometheus has scraped Envoy, so an
        autoscaler started on the returned stack sees load from its first evaluation
        (Prometheus hands its scrapers their first targets ~5 s after it starts). Raises
        StackError when one of these takes longer than ``ready_timeout_s`` or an
        infrastructure process exits."""
        infra = self._infra.procs()
        try:
            for cond, what in self._serving_conditions():
                wait_until(cond, self.options.ready_timeout_s, what, every_s=0.1, procs=infra)
        except (ChildExited, TimeoutError) as exc:
            raise StackError(str(exc)) from exc

    def _serving_conditions(self) -> Iterator[tuple[Callable[[], bool], str]]:
        """What ``_wait_serving`` waits for, in order, each with its description."""
        from caravan.local.prometheus import envoy_scraped

        for m in self.spec.models:
            want = m.replicas.start
            yield (functools.partial(self._all_ready, m.name, want),
                   f"{want} ready replica(s) of model {m.name!r}")
            yield (functools.partial(self.probe_envoy, m.name),
                   f"a successful request through Envoy for model {m.name!r}")
        if self.prometheus_url is not None:
            yield functools.partial(envoy_scraped, self.ports.prometheus), "Prometheus' first scrape of Envoy"
