"""What ``caravan xds`` runs: the control plane, its admin endpoint, until a signal.

``XdsConfig`` holds the validated options; ``prepare(config)`` loads the secrets the
spec names and builds the replica source and the TLS credentials, raising
``ConfigError`` (or ValueError) naming the field, file or variable that is unusable
(never a key's value); ``run(prepared)`` serves ADS plus the admin HTTP endpoint
until SIGTERM / SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from caravan.discovery.consul import ConsulReplicaSource
from caravan.discovery.registry_file import FileReplicaSource
from caravan.discovery.types import ReplicaSource
from caravan.errors import ConfigError
from caravan.spec import PlatformSpec
from caravan.xds.admin import AdminServer, ControlPlaneState, DiscoveryStatus, start_admin
from caravan.xds.controlplane import ControlPlane
from caravan.xds.security import redact, with_loaded_keys
from caravan.xds.server import tls_credentials


@dataclass(frozen=True)
class XdsConfig:
    """Replicas from ``registry`` (a file) xor ``consul``; ``port`` / ``admin_port``
    None: the spec's ``control_plane`` ports; ``node_id`` names this instance."""

    spec: PlatformSpec
    registry: Path | None = None
    consul: bool = False
    port: int | None = None
    admin_port: int | None = None
    node_id: str = "caravan-xds"

    def __post_init__(self) -> None:
        if (self.registry is None) == (not self.consul):
            raise ConfigError("--registry: give exactly one of --registry FILE or --consul")


@dataclass(frozen=True)
class Prepared:
    """Everything ``run`` needs, built (and checked) before anything is served."""

    config: XdsConfig
    spec: PlatformSpec  # with the API keys and the JWKS loaded
    source: ReplicaSource
    metrics: CollectorRegistry
    credentials: grpc.ServerCredentials | None


def prepare(config: XdsConfig) -> Prepared:
    """Load the secrets, build the replica source and the TLS credentials. Raises
    ConfigError (or ValueError) naming what is unusable."""
    ps = with_loaded_keys(config.spec, os.environ)
    metrics = CollectorRegistry()
    xds_tls = ps.security.xds_tls if ps.security is not None else None
    creds = tls_credentials(xds_tls) if xds_tls is not None else None
    return Prepared(config, ps, _source(ps, config.registry, metrics), metrics, creds)


def run(prepared: Prepared) -> None:
    """Serve until SIGTERM / SIGINT."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(prepared))


def _source(ps: PlatformSpec, registry: Path | None, metrics: CollectorRegistry) -> ReplicaSource:
    if registry is not None:
        return FileReplicaSource(registry)
    return ConsulReplicaSource.from_spec(ps.consul, metrics)


async def _run(p: Prepared) -> None:
    ps, config = p.spec, p.config
    cp = ControlPlane(ps, p.source, p.metrics, port=config.port, instance_id=config.node_id)
    if p.credentials is not None and ps.security is not None and ps.security.xds_tls is not None:
        cp.server.use_credentials(p.credentials, ps.security.xds_tls.client_sans)
    admin = await _start_admin(RedactedState(cp), p.metrics, ps, config.admin_port)
    task = asyncio.create_task(cp.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        await admin.stop()


async def _start_admin(
    cp: ControlPlaneState, metrics: CollectorRegistry, ps: PlatformSpec, port: int | None
) -> AdminServer:
    """Start the admin HTTP endpoint (/healthz, /readyz, /metrics, /debug/*)."""
    host = ps.control_plane.address
    return await start_admin(
        cp, metrics, host, ps.control_plane.admin_port if port is None else port
    )


class RedactedState:
    """The admin endpoint's view of a control plane, with API keys blanked in
    ``/debug/snapshot`` (``caravan.xds.security.redact``)."""

    def __init__(self, inner: ControlPlaneState) -> None:
        self._inner = inner

    def ready(self) -> bool:
        return self._inner.ready()

    def snapshot_json(self) -> dict[str, Any]:
        out: dict[str, Any] = redact(self._inner.snapshot_json())
        return out

    def clients_json(self) -> list[dict[str, Any]]:
        return self._inner.clients_json()

    def discovery_problems(self) -> dict[str, str]:
        inner = self._inner
        return inner.discovery_problems() if isinstance(inner, DiscoveryStatus) else {}
