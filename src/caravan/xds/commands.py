"""``caravan xds``: run the xDS control plane (ADS on --port, admin HTTP on --admin-port).

Replicas come from ``--registry FILE`` (the local supervisor's registry) or
``--consul`` (the spec's Consul). With ``spec.security``: API keys are loaded from
the files / env vars the spec names (never logged; blanked in ``/debug/snapshot``)
and the ADS port serves TLS when ``security.xds_tls`` is set. Heavy imports stay inside the command so
``caravan --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from caravan.discovery.types import ReplicaSource
    from caravan.spec import PlatformSpec
    from caravan.xds.admin import AdminServer, ControlPlaneState


SPEC_OPT = typer.Option(..., "--spec", help="platform spec YAML")
REGISTRY_OPT = typer.Option(None, "--registry", help="local replica registry (JSON)")
CONSUL_OPT = typer.Option(False, "--consul", help="discover replicas in Consul (spec.consul)")
PORT_OPT = typer.Option(None, "--port", help="ADS port (default spec.control_plane.xds_port)")
ADMIN_OPT = typer.Option(
    None, "--admin-port", help="admin HTTP port (default control_plane.admin_port)"
)
NODE_OPT = typer.Option(
    "caravan-xds", "--node-id", help="this instance's id (logs, /debug/snapshot)"
)


def register(app: typer.Typer) -> None:
    app.command("xds")(xds)


def xds(
    spec: Path = SPEC_OPT,
    registry: Path | None = REGISTRY_OPT,
    consul: bool = CONSUL_OPT,
    port: int | None = PORT_OPT,
    admin_port: int | None = ADMIN_OPT,
    node_id: str = NODE_OPT,
) -> None:
    """Run the xDS control plane: discovery -> snapshots -> ADS (SotW and delta) for Envoy."""
    import asyncio
    import contextlib

    from prometheus_client import CollectorRegistry

    from caravan.logs import setup_logging
    from caravan.spec import SpecError, load_spec

    setup_logging("xds")
    if (registry is None) == (not consul):
        raise typer.BadParameter(
            "give exactly one of --registry FILE or --consul", param_hint="--registry"
        )
    try:
        ps = load_spec(spec)
    except (SpecError, OSError) as exc:
        typer.echo(f"xds: {exc}", err=True)
        raise typer.Exit(2) from None
    ps = _with_secrets(ps)
    metrics = CollectorRegistry()
    source = _source(ps, registry, metrics)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(ps, source, metrics, port, admin_port, node_id))


def _with_secrets(ps: PlatformSpec) -> PlatformSpec:
    """Load API keys (file / env) and the JWT JWKS (``security.jwt.jwks_file``) named
    by the spec; exit 2 with a message naming the field, file, line or variable
    (never the key) when they are unusable."""
    import os

    from caravan.xds.security import with_loaded_keys

    try:
        return with_loaded_keys(ps, os.environ)
    except ValueError as exc:
        typer.echo(f"xds: {exc}", err=True)
        raise typer.Exit(2) from None


def _source(ps: PlatformSpec, registry: Path | None, metrics: CollectorRegistry) -> ReplicaSource:
    if registry is not None:
        from caravan.discovery.local import FileReplicaSource

        return FileReplicaSource(registry)
    from caravan.discovery.consul import ConsulReplicaSource

    try:
        return ConsulReplicaSource.from_spec(ps.consul, metrics)
    except ValueError as exc:
        typer.echo(f"xds: {exc}", err=True)
        raise typer.Exit(2) from None


async def _run(
    ps: PlatformSpec,
    source: ReplicaSource,
    metrics: CollectorRegistry,
    port: int | None,
    admin_port: int | None,
    node_id: str,
) -> None:
    import asyncio
    import signal

    from caravan.xds.controlplane import ControlPlane

    cp = ControlPlane(ps, source, metrics, port=port, instance_id=node_id)
    if ps.security is not None and ps.security.xds_tls is not None:
        from caravan.xds.server import tls_credentials

        try:
            xds_tls = ps.security.xds_tls
            cp.server.use_credentials(tls_credentials(xds_tls), xds_tls.client_sans)
        except ValueError as exc:
            typer.echo(f"xds: {exc}", err=True)
            raise typer.Exit(2) from None
    admin = await _start_admin(RedactedState(cp), metrics, ps, admin_port)
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
    from caravan.xds.admin import start_admin

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
        from caravan.xds.security import redact

        out: dict[str, Any] = redact(self._inner.snapshot_json())
        return out

    def clients_json(self) -> list[dict[str, Any]]:
        return self._inner.clients_json()

    def discovery_problems(self) -> dict[str, str]:
        from caravan.xds.admin import DiscoveryStatus

        inner = self._inner
        return inner.discovery_problems() if isinstance(inner, DiscoveryStatus) else {}
