"""``caravan autoscale``: run the policy-driven autoscaler against Prometheus and Nomad.

  caravan autoscale --spec platform.yaml --prometheus http://127.0.0.1:9090
  caravan autoscale --spec platform.yaml --prometheus URL --once --explain
  caravan autoscale --spec platform.yaml --prometheus URL --explain --counts-from prometheus

``--explain`` (implies ``--once``) prints each check's query, value and vote and the
final decision per model, and never scales. ``--counts-from prometheus`` reads replica
counts from Prometheus' ``up`` series (a running ``caravan up``) instead of Nomad.
Thin: options -> ``AutoscaleConfig`` -> ``caravan.autoscaler.service`` (build, run) ->
exit code (``caravan.exits``: 1 for an invalid spec or a failed decision, 2 for a bad
flag, URL or Nomad setting). Imported only when ``caravan autoscale`` runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from caravan.autoscaler.service import AutoscaleConfig, build, run
from caravan.exits import errors_exit, read_spec


def register(app: typer.Typer) -> None:
    """Add ``autoscale`` to the ``caravan`` app."""
    app.command("autoscale")(autoscale)


def autoscale(
    spec: Annotated[Path, typer.Option("--spec", help="platform spec YAML")],
    prometheus: str = typer.Option(
        ..., "--prometheus", help="Prometheus base URL, e.g. http://127.0.0.1:9090"
    ),
    nomad_address: str | None = typer.Option(
        None, "--nomad-address", help="Nomad URL (else NOMAD_ADDR, nomad.address)"
    ),
    nomad_token_file: Path | None = typer.Option(
        None, "--nomad-token-file", help="ACL token file (else NOMAD_TOKEN, nomad.token_file)"
    ),
    counts_from: str = typer.Option(
        "nomad", "--counts-from", help="nomad | prometheus (read-only, for --explain)"
    ),
    model: Annotated[
        list[str] | None, typer.Option("--model", help="only these models (repeatable)")
    ] = None,
    once: bool = typer.Option(False, "--once", help="evaluate every policy once, then exit"),
    explain: bool = typer.Option(
        False, "--explain", help="print checks and decisions; never scale"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="decide and log, never scale"),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="serve /metrics on --metrics-address:PORT"
    ),
    metrics_address: str = typer.Option(
        "127.0.0.1", "--metrics-address", help="address /metrics listens on"
    ),
    query_timeout_s: float = typer.Option(
        5.0, "--query-timeout", help="Prometheus query timeout, s"
    ),
) -> None:
    """Scale each model's replicas from Prometheus signals, per its autoscaling policy."""
    with errors_exit("autoscale"):
        config = AutoscaleConfig(read_spec(spec), prometheus, nomad_address, nomad_token_file,
                                 counts_from, tuple(model or ()), once, explain, dry_run,
                                 metrics_port, query_timeout_s, metrics_address)
        built = build(config)
    if not built.scaler.handlers:
        Console(stderr=True).print(f"[yellow]no model in {spec} has an enabled autoscaling section[/yellow]")
        raise typer.Exit(0)
    raise typer.Exit(run(config, built, Console()))
