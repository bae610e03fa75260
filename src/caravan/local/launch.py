"""The one place each kind of Caravan process is started: Envoy, the control plane
(``caravan xds``), replicas (``tritonserver`` through ``ReplicaPlan``), and the one
bounded wait they all use. ``caravan up``'s supervisor, the tests (through
``tests/conftest.py``) and the benchmarks start their processes here.

* ``wait_until`` (from ``caravan.local.process``, re-exported): poll a condition with a
  bounded timeout; a watched child that exits ends the wait at once (``ChildExited``,
  with the tail of its log).
* Envoy: ``envoy_argv``, ``write_envoy_bootstrap`` (``caravan.render.envoy.bootstrap``
  as YAML), ``start_envoy`` (returns once the admin port listens).
* Control plane: ``xds_argv``, ``start_control_plane`` (returns once the ADS port
  listens; ``ready=True`` also waits for ``/readyz``), ``control_plane_ready``.
* Replicas: ``start_replicas`` / ``start_replica`` (returns once the model is ready:
  ModelReady true; for a TLS replica, its gRPC port listening, which tritonserver opens
  only after the model loaded).
* ``Launcher``: owns what it started under one state directory and stops it all,
  newest first, by PID.
* ``stream_request``: one request on one ``ModelStreamInfer`` stream (the only
  inference RPC a replica serves), returning the responses, the stream's status and
  the replica Envoy names in ``x-caravan-upstream``: how tests and benchmarks talk to
  what they started.
* ``envoy_hosts`` / ``serving_hosts``: the hosts of a cluster as Envoy's admin API
  lists them (with their health flags), to wait for Envoy to serve what was started.

Every function that starts a child stops it again when its wait fails, and every wait
is bounded. Times are seconds (``time.monotonic``).
"""

from __future__ import annotations

import functools
import signal
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import yaml

from caravan.bench.answer import read_answer, text_outputs, upstream_host
from caravan.bench.wire import MODEL_STREAM_INFER, decode_stream_response, encode_request
from caravan.discovery.types import HealthStatus, Replica
from caravan.local.health import model_ready
from caravan.local.process import ChildExited as ChildExited
from caravan.local.process import ChildProcess, caravan_argv, free_port, port_open, venv_binary
from caravan.local.process import wait_until as wait_until
from caravan.spec import ModelSpec, PlatformSpec
from caravan.triton.launcher import ReplicaOptions, ReplicaPlan, bare_model

LOCAL = "127.0.0.1"
REPLICA_READY_S = 60.0  # tritonserver loads the simulated model in ~2-4 s; generous on 2 busy cores


def _started(proc: ChildProcess, wait: Callable[[], object]) -> ChildProcess:
    """Run ``wait``; on any failure stop ``proc`` (by PID) and re-raise."""
    try:
        wait()
    except BaseException:
        proc.stop(grace_s=2)
        raise
    return proc


def start_listening(name: str, argv: Sequence[str], log_path: Path | None, port: int, *,
                    host: str = LOCAL, timeout_s: float = 30.0,
                    ready: Callable[[], bool] | None = None) -> ChildProcess:
    """Start ``argv`` as the owned child ``name``; return once it listens on
    ``host:port`` (and ``ready()`` is true, when given). On ``ChildExited`` or
    ``TimeoutError`` the child is stopped before the error is raised."""
    proc = ChildProcess(name, argv, log_path).start()

    def up() -> bool:
        return port_open(host, port) and (ready is None or ready())

    what = f"{name} listening on {host}:{port}" + (" and ready" if ready is not None else "")
    return _started(proc, lambda: wait_until(up, timeout_s, what, every_s=0.05, procs=[proc]))


# ------------------------------------------------------------------------------- Envoy


def envoy_argv(config: Path, *, log_level: str = "warning", concurrency: int | None = 1,
               drain_time_s: int | None = None) -> list[str]:
    """argv of the venv's (else PATH's) ``envoy`` on ``config``, with a dynamic base id
    (several Envoys side by side). ``concurrency`` None: Envoy's default (one worker per
    core); ``drain_time_s`` None: Envoy's default listener drain time."""
    argv = [venv_binary("envoy"), "-c", str(config), "--use-dynamic-base-id", "--log-level", log_level]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    if drain_time_s is not None:
        argv += ["--drain-time-s", str(drain_time_s)]
    return argv


def write_envoy_bootstrap(path: Path, spec: PlatformSpec, xds: Sequence[tuple[str, int]], *,
                          node_id: str = "caravan-local", cluster: str = "caravan",
                          delta: bool = False) -> Path:
    """Write the rendered bootstrap (``caravan.render.envoy.bootstrap``) for ``spec``
    with control planes ``xds`` as YAML at ``path``; return ``path``."""
    from caravan.render.envoy import bootstrap

    path.parent.mkdir(parents=True, exist_ok=True)
    boot = bootstrap(spec, list(xds), node_id=node_id, cluster=cluster, delta=delta)
    path.write_text(yaml.safe_dump(boot, sort_keys=False))
    return path


def start_envoy(config: Path, log_path: Path | None, *, admin_port: int | None,
                name: str = "envoy", timeout_s: float = 30.0, log_level: str = "warning",
                concurrency: int | None = 1, drain_time_s: int | None = None) -> ChildProcess:
    """Start Envoy on ``config``; return once ``admin_port`` (when given) listens on
    127.0.0.1. ``ChildExited`` / ``TimeoutError`` (the child stopped) otherwise."""
    argv = envoy_argv(config, log_level=log_level, concurrency=concurrency, drain_time_s=drain_time_s)
    if admin_port is None:
        return ChildProcess(name, argv, log_path).start()
    return start_listening(name, argv, log_path, admin_port, timeout_s=timeout_s)


# ------------------------------------------------------------------------------- control plane


def xds_argv(spec_path: Path, *, port: int, admin_port: int, registry: Path | None = None,
             consul: bool = False, node_id: str | None = None) -> list[str]:
    """argv of ``caravan xds`` (this interpreter): replicas from ``registry`` or Consul."""
    if (registry is None) == (not consul):
        raise ValueError("registry: give exactly one of registry or consul")
    args = ["xds", "--spec", str(spec_path), "--port", str(port), "--admin-port", str(admin_port)]
    args += ["--registry", str(registry)] if registry is not None else ["--consul"]
    if node_id is not None:
        args += ["--node-id", node_id]
    return caravan_argv(*args)


def control_plane_ready(admin_port: int, timeout_s: float = 2.0) -> bool:
    """True when the control plane's admin ``/readyz`` on 127.0.0.1 answers 200."""
    try:
        return http_get(admin_port, "/readyz", timeout_s)[0] == 200
    except OSError:
        return False


def start_control_plane(spec_path: Path, log_path: Path | None, *, port: int, admin_port: int,
                        registry: Path | None = None, consul: bool = False,
                        node_id: str | None = None, name: str = "xds", ready: bool = False,
                        timeout_s: float = 30.0) -> ChildProcess:
    """Start ``caravan xds``; return once its ADS ``port`` listens on 127.0.0.1 (and,
    with ``ready``, once ``/readyz`` answers 200: its first snapshot is built)."""
    argv = xds_argv(spec_path, port=port, admin_port=admin_port, registry=registry,
                    consul=consul, node_id=node_id)
    check = functools.partial(control_plane_ready, admin_port) if ready else None
    return start_listening(name, argv, log_path, port, timeout_s=timeout_s, ready=check)


# ------------------------------------------------------------------------------- replicas


def replica_ready(plan: ReplicaPlan) -> bool:
    """ModelReady of ``plan``'s model; for a TLS replica (which the plaintext probe
    cannot reach) its gRPC port listening, opened only once the model loaded."""
    if plan.options.tls is not None:
        return port_open(plan.options.host, plan.grpc_port)
    return model_ready(plan.endpoint, plan.model.name, timeout_s=0.5)


def start_replicas(plans: Sequence[ReplicaPlan], log_dir: Path | None, *,
                   timeout_s: float = REPLICA_READY_S) -> list[ChildProcess]:
    """Start every plan's tritonserver at once (they load in parallel), then wait until
    each is ready (``replica_ready``). Logs: ``log_dir/replica-<port>.log``. On failure
    every one of them is stopped and the error (naming the replica) raised."""
    procs: list[ChildProcess] = []
    try:
        for plan in plans:
            log = None if log_dir is None else log_dir / f"replica-{plan.model.name}-{plan.grpc_port}.log"
            procs.append(plan.start(log))
        for plan, proc in zip(plans, procs, strict=True):
            wait_until(functools.partial(replica_ready, plan), timeout_s,
                       f"replica {plan.endpoint} ({plan.model.name}) ready", every_s=0.1, procs=[proc])
    except BaseException:
        for proc in procs:
            proc.stop(grace_s=2)
        raise
    return procs


def start_replica(plan: ReplicaPlan, log_path: Path | None, *,
                  timeout_s: float = REPLICA_READY_S) -> ChildProcess:
    """Start one replica and wait until it is ready (see ``start_replicas``)."""
    proc = plan.start(log_path)
    return _started(proc, lambda: wait_until(lambda: replica_ready(plan), timeout_s,
                                             f"replica {plan.endpoint} ({plan.model.name}) ready",
                                             every_s=0.1, procs=[proc]))


@dataclass
class RunningReplica:
    """A started replica: its id (the caller's name for it), plan and process."""

    id: str
    plan: ReplicaPlan
    proc: ChildProcess

    @property
    def model(self) -> str:
        return self.plan.model.name

    @property
    def port(self) -> int:
        return self.plan.grpc_port

    @property
    def metrics_port(self) -> int:
        return self.plan.metrics_port

    @property
    def endpoint(self) -> str:
        return self.plan.endpoint

    def registration(self, health: HealthStatus = HealthStatus.HEALTHY) -> Replica:
        """This replica as a discovery entry (for a registry file or a Consul fake)."""
        return Replica(id=self.id, model=self.model, address=self.plan.options.host, port=self.port,
                       metrics_port=self.metrics_port, health=health)


@dataclass
class Launcher:
    """Starts Caravan's processes under ``state_dir`` (logs in ``state_dir/logs``) and
    owns them: ``stop`` ends every one, newest first, by PID. Not thread-safe."""

    state_dir: Path
    children: list[ChildProcess] = field(default_factory=list)

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def own(self, proc: ChildProcess) -> ChildProcess:
        """Take ``proc`` (started elsewhere) into this launcher's care."""
        self.children.append(proc)
        return proc

    def replicas(self, ids: Sequence[str], model: str | ModelSpec,
                 options: ReplicaOptions = ReplicaOptions(), *, wait: bool = True,
                 timeout_s: float = REPLICA_READY_S) -> list[RunningReplica]:
        """One replica of ``model`` per id (``bare_model(model)`` for a name), on fresh
        ports, files under ``state_dir/replicas/<id>``; all start at once. ``wait``:
        return once every one is ready (``start_replicas``)."""
        spec = bare_model(model) if isinstance(model, str) else model
        plans = [ReplicaPlan(self.state_dir / "replicas" / rid, spec, free_port(), free_port(), options)
                 for rid in ids]
        if wait:
            procs = start_replicas(plans, self.logs, timeout_s=timeout_s)
        else:
            procs = [p.start(self.logs / f"replica-{rid}.log") for rid, p in zip(ids, plans, strict=True)]
        self.children += procs
        return [RunningReplica(rid, plan, proc) for rid, plan, proc in zip(ids, plans, procs, strict=True)]

    def replica(self, rid: str, model: str | ModelSpec, options: ReplicaOptions = ReplicaOptions(),
                *, wait: bool = True) -> RunningReplica:
        (one,) = self.replicas([rid], model, options, wait=wait)
        return one

    def envoy(self, spec: PlatformSpec, xds: Sequence[tuple[str, int]], *, node_id: str = "caravan-local",
              delta: bool = False, name: str | None = None, drain_time_s: int | None = 1) -> ChildProcess:
        """Envoy with ``spec``'s rendered bootstrap and control planes ``xds``; returns once
        its admin port (``spec.envoy.admin_port``) listens."""
        name = name or f"envoy-{node_id}"
        config = write_envoy_bootstrap(self.state_dir / f"{name}.yaml", spec, xds, node_id=node_id, delta=delta)
        return self.own(start_envoy(config, self.logs / f"{name}.log", admin_port=spec.envoy.admin_port,
                                    name=name, drain_time_s=drain_time_s))

    def envoy_config(self, config: Path, admin_port: int | None, *, name: str = "envoy",
                     concurrency: int | None = 1, drain_time_s: int | None = 1) -> ChildProcess:
        """Envoy on an already written ``config`` (hand-written, or rendered with options
        ``envoy`` does not take); returns once ``admin_port`` (when given) listens."""
        return self.own(start_envoy(config, self.logs / f"{name}.log", admin_port=admin_port, name=name,
                                    concurrency=concurrency, drain_time_s=drain_time_s))

    def control_plane(self, spec_path: Path, *, port: int, admin_port: int, registry: Path | None = None,
                      consul: bool = False, node_id: str | None = None, name: str = "xds",
                      ready: bool = False, timeout_s: float = 30.0) -> ChildProcess:
        """``caravan xds`` (see ``start_control_plane``)."""
        return self.own(start_control_plane(spec_path, self.logs / f"{name}.log", port=port,
                                            admin_port=admin_port, registry=registry, consul=consul,
                                            node_id=node_id, name=name, ready=ready,
                                            timeout_s=timeout_s))

    def stop(self, grace_s: float = 5.0) -> None:
        """End every child by its PID: SIGTERM to all, newest first (so they shut down
        in parallel; a replica takes a few seconds), then wait for each, SIGKILL after
        ``grace_s``. Idempotent."""
        for p in reversed(self.children):
            p.signal(signal.SIGTERM)
        while self.children:
            self.children.pop().stop(grace_s=grace_s)

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# ------------------------------------------------------------------------------- one request


@dataclass(frozen=True)
class StreamReply:
    """What one ``stream_request`` got: Envoy's ``x-caravan-upstream`` (``""`` when
    absent: no Envoy in front, or Envoy chose no replica), every response of the stream
    in order, and the stream's gRPC status name and details ("OK", "")."""

    upstream: str
    responses: tuple[Any, ...]
    status: str = "OK"
    details: str = ""

    @property
    def errors(self) -> list[str]:
        """The in-stream ``error_message`` of every response that carries one."""
        return [r.error_message for r in self.responses if r.error_message]

    @property
    def final(self) -> bool:
        """True when a response is flagged ``triton_final_response``."""
        return any(read_answer(r.infer_response).final for r in self.responses if not r.error_message)

    @property
    def outcome(self) -> str:
        """"OK" (gRPC OK, a final response, no in-stream error), "STREAM_ERROR" (an
        in-stream error), "NO_FINAL" (OK but never final), else the gRPC status name."""
        if self.status != "OK":
            return self.status
        if self.errors:
            return "STREAM_ERROR"
        return "OK" if self.final else "NO_FINAL"

    @property
    def ok(self) -> bool:
        return self.outcome == "OK"

    @property
    def message(self) -> str:
        """The first error (in-stream message or gRPC details), "" when ok."""
        return self.details if self.status != "OK" else next(iter(self.errors), "")

    @property
    def text(self) -> str:
        """The concatenated ``text_output`` of every data response."""
        return "".join("".join(text_outputs(r.infer_response)) for r in self.responses
                       if not r.error_message)


def stream_request(url: str, model: str, headers: Mapping[str, str] | Sequence[tuple[str, str]] = (), *,
                   prompt: str = "hi", max_tokens: int = 4, stream: bool = False,
                   timeout_s: float = 10.0, request_id: str = "1", channel: grpc.Channel | None = None,
                   on_first: Callable[[str], None] | None = None) -> StreamReply:
    """Send one request (Caravan's wire encoding, ``caravan.bench.wire``) on one
    ``ModelStreamInfer`` stream to ``url`` with gRPC ``headers``, half-close, read the
    stream to its end; never raises for gRPC errors (they are the reply's status).
    ``channel``: reuse an open channel (one is opened and closed per call otherwise).
    ``on_first(upstream)`` is called when the first response arrives."""
    request = encode_request(model, request_id, prompt, max_tokens, stream=stream, count_tokens=False)
    metadata = tuple(headers.items()) if isinstance(headers, Mapping) else tuple(headers)
    own = channel is None
    ch = grpc.insecure_channel(url) if channel is None else channel
    responses: list[Any] = []
    upstream = ""
    try:
        rpc = ch.stream_stream(MODEL_STREAM_INFER, response_deserializer=decode_stream_response)
        call = rpc(iter((request,)), metadata=metadata, timeout=timeout_s)
        try:
            for resp in call:
                if not responses:
                    upstream = upstream_host(call.initial_metadata())
                    if on_first is not None:
                        on_first(upstream)
                responses.append(resp)
            upstream = upstream or upstream_host(call.initial_metadata())
        except grpc.RpcError as err:
            e: Any = err
            upstream = upstream or upstream_host(e.initial_metadata()) or upstream_host(e.trailing_metadata())
            return StreamReply(upstream, tuple(responses), e.code().name, e.details() or "")
        return StreamReply(upstream, tuple(responses))
    finally:
        if own:
            ch.close()


# ------------------------------------------------------------------------------- Envoy's view


def http_get(port: int, path: str, timeout_s: float = 2.0, host: str = LOCAL) -> tuple[int, str]:
    """GET http://host:port/path -> (status, body); HTTP error statuses are returned,
    connection errors raised (``OSError``)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout_s) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode()


def envoy_hosts(admin_port: int, cluster: str) -> dict[str, str]:
    """{"host:port": health_flags} of ``cluster`` from Envoy's admin ``/clusters``."""
    _, text = http_get(admin_port, "/clusters")
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == cluster and parts[2] == "health_flags":
            out[parts[1]] = parts[3]
    return out


def serving_hosts(admin_port: int, cluster: str) -> set[str]:
    """The hosts of ``cluster`` Envoy sends new requests to (health flags exactly ``healthy``)."""
    return {h for h, flags in envoy_hosts(admin_port, cluster).items() if flags == "healthy"}
