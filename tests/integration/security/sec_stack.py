"""A secured local stack for the security tests: real replicas (``tritonserver`` with
the simulated vLLM engine) serving gRPC over TLS or mutual TLS, an in-process control
plane (xDS over TLS when the spec says so) on its own event-loop thread, and a real
Envoy with the rendered bootstrap (upstream TLS / mTLS to the replicas when the spec
says so).

Test code only. Replicas and Envoy are started through ``caravan.local.launch`` and
stopped by PID in ``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import urllib.request
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry
from sec_pki import Pki

from caravan.discovery.registry_file import FileReplicaSource, write_registry
from caravan.local.launch import Launcher, wait_until, write_envoy_bootstrap
from caravan.local.process import port_open
from caravan.spec import PlatformSpec
from caravan.triton.launcher import ReplicaOptions, ServerTls
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


def replica_options(pki: Pki | None, mtls: bool) -> ReplicaOptions:
    """Fast replica options; with ``pki``, gRPC over TLS with the server cert (``mtls``:
    also requires a client cert signed by the CA)."""
    tls = None
    if pki is not None:
        tls = ServerTls(pki.server_cert, pki.server_key, pki.ca if mtls else None)
    return ReplicaOptions(time_scale=0.01, stream_interval_ms=0, exit_timeout_s=10, tls=tls)


def admin_get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
        return str(r.read().decode())


def healthy(admin_port: int, cluster: str) -> int:
    """Number of hosts of ``cluster`` whose health flags are ``healthy``."""
    lines = admin_get(admin_port, "/clusters").splitlines()
    return sum(1 for ln in lines if ln.startswith(f"{cluster}::") and ln.endswith("health_flags::healthy"))


@dataclass
class SecureStack:
    tmp: Path
    spec: PlatformSpec
    cp: ThreadedControlPlane
    launcher: Launcher
    replica_ports: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.spec.envoy.listen_port}"

    def close(self) -> None:
        self.cp.stop()
        self.launcher.stop()


def start_stack(
    tmp: Path, spec: PlatformSpec, pki: Pki | None, replicas: int, mtls_replicas: bool,
    env: Mapping[str, str] | None = None, envoy_concurrency: int = 1,
) -> SecureStack:
    """Replicas (TLS when ``pki``), control plane, Envoy (``envoy_concurrency`` workers);
    returns once Envoy has the listener and every replica is healthy in ``model-alpha``."""
    launcher = Launcher(tmp)
    cp: ThreadedControlPlane | None = None
    try:
        members = launcher.replicas([f"{MODEL}-{i}" for i in range(replicas)], MODEL,
                                    replica_options(pki, mtls_replicas))
        registry = tmp / "registry.json"
        write_registry(registry, [m.registration() for m in members])
        cp = ThreadedControlPlane(spec, registry, dict(os.environ) if env is None else env)
        config = write_envoy_bootstrap(tmp / "envoy.yaml", spec, [("127.0.0.1", cp.cp.port)],
                                       node_id="caravan-envoy")
        launcher.envoy_config(config, spec.envoy.admin_port, name="envoy",
                              concurrency=envoy_concurrency)
        stack = SecureStack(tmp, spec, cp, launcher, [m.port for m in members])
    except BaseException:
        if cp is not None:
            cp.stop()
        launcher.stop()
        raise
    try:
        admin = spec.envoy.admin_port
        # listed in /listeners before the worker accepts on it: also wait for a connect
        port = spec.envoy.listen_port
        wait_until(lambda: "caravan-grpc" in admin_get(admin, "/listeners")
                   and port_open("127.0.0.1", port), 20, "the listener accepting connections")
        wait_until(lambda: healthy(admin, f"model-{MODEL}") == replicas, 20, "healthy replicas")
    except BaseException:
        stack.close()
        raise
    return stack
