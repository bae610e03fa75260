"""A secured local stack for the security tests: real TLS replica processes, an
in-process control plane (xDS over TLS when the spec says so) on its own event-loop
thread, and a real Envoy with the rendered bootstrap.

Test code only. Every process is a ``ChildProcess`` stopped by PID in ``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from prometheus_client import CollectorRegistry
from sec_pki import Pki

from caravan.discovery.local import FileReplicaSource, write_registry
from caravan.discovery.types import Replica
from caravan.local.process import ChildProcess, caravan_argv, free_port, venv_binary, wait_for_port
from caravan.render.envoy import bootstrap
from caravan.spec import PlatformSpec
from caravan.xds.controlplane import ControlPlane
from caravan.xds.security import with_loaded_keys
from caravan.xds.server import tls_credentials

T = TypeVar("T")
MODEL = "alpha"


class ThreadedControlPlane:
    """A ``ControlPlane`` (TLS on the ADS port when ``spec.security.xds_tls``) on an
    event loop in a daemon thread."""

    def __init__(self, spec: PlatformSpec, registry: Path, env: Mapping[str, str]) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.spec = with_loaded_keys(spec, env)
        self.cp: ControlPlane = self.call(self._make(registry))
        self.loop.call_soon_threadsafe(self._start)
        self.call(asyncio.wait_for(self.cp.became_ready.wait(), 15))

    async def _make(self, registry: Path) -> ControlPlane:
        cp = ControlPlane(
            self.spec, FileReplicaSource(registry, poll_s=0.02), CollectorRegistry(), port=0
        )
        sec = self.spec.security
        if sec is not None and sec.xds_tls is not None:
            cp.server.use_credentials(tls_credentials(sec.xds_tls))
        return cp

    def _start(self) -> None:
        self.task = self.loop.create_task(self.cp.run())

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 20) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        async def cancel() -> None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

        with contextlib.suppress(Exception):
            self.call(cancel(), 5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def start_replica(tmp: Path, rid: str, pki: Pki | None, mtls: bool) -> tuple[ChildProcess, int]:
    """A real ``caravan replica`` serving TLS with the server cert (mTLS: requires a
    client cert signed by the CA)."""
    port = free_port()
    argv = caravan_argv(
        "replica", "--model", MODEL, "--port", str(port), "--metrics-port", str(free_port()),
        "--replica-id", rid, "--time-scale", "0.01", "--stream-interval-ms", "0",
    )
    if pki is not None:
        argv += ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
        if mtls:
            argv += ["--tls-client-ca", str(pki.ca)]
    proc = ChildProcess(f"replica-{rid}", argv, tmp / "logs" / f"{rid}.log").start()
    wait_for_port("127.0.0.1", port, 20)
    return proc, port


def start_envoy(tmp: Path, spec: PlatformSpec, xds_port: int) -> ChildProcess:
    path = tmp / "envoy.yaml"
    path.write_text(yaml.safe_dump(bootstrap(spec, [("127.0.0.1", xds_port)])))
    argv = [venv_binary("envoy"), "-c", str(path), "--use-dynamic-base-id", "--concurrency",
            "1", "--log-level", "warning", "--drain-time-s", "1"]
    proc = ChildProcess("envoy", argv, tmp / "logs" / "envoy.log").start()
    wait_for_port("127.0.0.1", spec.envoy.admin_port, 20)
    return proc


def admin_get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
        return str(r.read().decode())


def wait_until(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception as exc:  # admin not up yet, listener not there yet
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what} (last error: {last})")


def healthy(admin_port: int, cluster: str) -> int:
    """Number of hosts of ``cluster`` whose health flags are ``healthy``."""
    lines = admin_get(admin_port, "/clusters").splitlines()
    return sum(1 for ln in lines if ln.startswith(f"{cluster}::") and ln.endswith("health_flags::healthy"))


@dataclass
class SecureStack:
    tmp: Path
    spec: PlatformSpec
    cp: ThreadedControlPlane
    envoy: ChildProcess
    procs: list[ChildProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.spec.envoy.listen_port}"

    def close(self) -> None:
        self.envoy.stop()
        self.cp.stop()
        for p in self.procs:
            p.stop()


def start_stack(
    tmp: Path, spec: PlatformSpec, pki: Pki | None, replicas: int, mtls_replicas: bool,
    env: Mapping[str, str] | None = None,
) -> SecureStack:
    """Replicas (TLS when ``pki``), control plane, Envoy; returns once Envoy has the
    listener and every replica is healthy in ``model-alpha``."""
    procs: list[ChildProcess] = []
    cp: ThreadedControlPlane | None = None
    try:
        members = []
        for i in range(replicas):
            proc, port = start_replica(tmp, f"{MODEL}-{i}", pki, mtls_replicas)
            procs.append(proc)
            members.append(Replica(f"{MODEL}-{i}", MODEL, "127.0.0.1", port))
        registry = tmp / "registry.json"
        write_registry(registry, members)
        cp = ThreadedControlPlane(spec, registry, dict(os.environ) if env is None else env)
        envoy = start_envoy(tmp, spec, cp.cp.port)
        stack = SecureStack(tmp, spec, cp, envoy, procs)
    except BaseException:
        if cp is not None:
            cp.stop()
        for p in procs:
            p.stop()
        raise
    try:
        admin = spec.envoy.admin_port
        wait_until(lambda: "caravan-grpc" in admin_get(admin, "/listeners"), 20, "the listener")
        wait_until(lambda: healthy(admin, f"model-{MODEL}") == replicas, 20, "healthy replicas")
    except BaseException:
        stack.close()
        raise
    return stack
