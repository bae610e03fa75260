"""``caravan xds``: run the xDS control plane (ADS on --port, admin HTTP on --admin-port).

Replicas come from ``--registry FILE`` (the local supervisor's registry) or
``--consul`` (the spec's Consul). With ``spec.security``: API keys are loaded from
the files / env vars the spec names (never logged; blanked in ``/debug/snapshot``)
and the ADS port serves TLS when ``security.xds_tls`` is set.

Thin: options -> ``XdsConfig`` -> ``caravan.xds.service`` (prepare, run) -> exit code
(``caravan.exits``: 2 for a bad flag, key file or TLS file, 1 for an invalid spec).
Imported only when ``caravan xds`` runs (``caravan.cli`` registers it lazily).
"""

from __future__ import annotations

from pathlib import Path

import typer

from caravan.exits import errors_exit, read_spec
from caravan.logs import setup_logging
from caravan.xds.service import XdsConfig, prepare, run

SPEC_OPT = typer.Option(..., "--spec", help="platform spec YAML")
REGISTRY_OPT = typer.Option(None, "--registry", help="local replica registry (JSON)")
CONSUL_OPT = typer.Option(False, "--consul", help="discover replicas in Consul (spec.consul)")
PORT_OPT = typer.Option(None, "--port", help="ADS port (default spec.control_plane.xds_port)")
ADMIN_OPT = typer.Option(
    None, "--admin-port", help="admin HTTP port (default control_plane.admin_port)"
)
NODE_OPT = typer.Option(
    XdsConfig.__dataclass_fields__["node_id"].default, "--node-id",
    help="this instance's id (logs, /debug/snapshot)"
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
    setup_logging("xds")
    with errors_exit("xds"):
        prepared = prepare(XdsConfig(read_spec(spec), registry, consul, port, admin_port, node_id))
    run(prepared)
