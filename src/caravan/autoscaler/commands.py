"""``caravan autoscale``: run the policy-driven autoscaler against Prometheus and Nomad.

  caravan autoscale --spec platform.yaml --prometheus http://127.0.0.1:9090
  caravan autoscale --spec platform.yaml --prometheus URL --once --explain
  caravan autoscale --spec platform.yaml --prometheus URL --explain --counts-from prometheus

``--explain`` (implies ``--once``) prints each check's query, value and vote and the
final decision per model, and never scales. ``--counts-from prometheus`` reads replica
counts from Prometheus' ``up`` series (a running ``caravan up``) instead of Nomad.
Heavy imports stay inside the command so ``caravan --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from caravan.autoscaler.handler import Autoscaler, ScalingDecision
    from caravan.autoscaler.ports import MetricsSource, ScaleTarget
    from caravan.spec import PlatformSpec


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
        None, "--metrics-port", help="serve /metrics on 127.0.0.1:PORT"
    ),
    query_timeout_s: float = typer.Option(
        5.0, "--query-timeout", help="Prometheus query timeout, s"
    ),
) -> None:
    """Scale each model's replicas from Prometheus signals, per its autoscaling policy."""
    import asyncio

    from prometheus_client import CollectorRegistry, start_http_server
    from rich.console import Console

    from caravan.autoscaler.handler import build_autoscaler
    from caravan.autoscaler.prometheus import PrometheusMetricsSource
    from caravan.logs import setup_logging
    from caravan.spec import SpecError, load_spec

    err = Console(stderr=True)
    if counts_from not in ("nomad", "prometheus"):
        raise typer.BadParameter(
            f"{counts_from!r}: expected nomad or prometheus", param_hint="--counts-from"
        )
    if counts_from == "prometheus" and not (explain or dry_run):
        raise typer.BadParameter(
            "prometheus counts are read-only: add --explain or --dry-run",
            param_hint="--counts-from",
        )
    try:
        platform = load_spec(spec)
        metrics = PrometheusMetricsSource(prometheus, timeout_s=query_timeout_s)
    except SpecError as exc:
        err.print(str(exc), markup=False, highlight=False)
        raise typer.Exit(1) from None
    except (OSError, ValueError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    try:
        target = _target(platform, counts_from, nomad_address, nomad_token_file, metrics)
    except ValueError as exc:
        err.print(f"autoscale: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    registry = CollectorRegistry()
    scaler = build_autoscaler(
        platform,
        metrics,
        target,
        registry=registry,
        dry_run=dry_run or explain,
        models=model or None,
    )
    if not scaler.handlers:
        err.print(f"[yellow]no model in {spec} has an enabled autoscaling section[/yellow]")
        raise typer.Exit(0)
    if explain or once:
        if not explain:
            setup_logging("autoscaler")
        decisions = scaler.once(act=not explain)
        if explain:
            print_explain(decisions, Console())
        if any(d.action == "error" for d in decisions):
            raise typer.Exit(1)
        return
    setup_logging("autoscaler")
    if metrics_port is not None:
        start_http_server(metrics_port, addr="127.0.0.1", registry=registry)
    asyncio.run(_run_until_signal(scaler))


def _target(
    platform: PlatformSpec, counts_from: str, nomad_address: str | None,
    token_file: Path | None, metrics: MetricsSource,
) -> ScaleTarget:
    """The scale target; Nomad's client from ``caravan.nomad.client`` (flag > env > spec).
    Raises ValueError naming a bad setting."""
    import os

    from caravan.autoscaler.local import PrometheusReplicaCounts
    from caravan.autoscaler.nomad import NomadScaleTarget
    from caravan.autoscaler.policy import policy_for
    from caravan.nomad.client import nomad_client, resolve_settings

    if counts_from == "prometheus":
        return PrometheusReplicaCounts(metrics)
    jobs = {}
    for m in platform.models:
        p = policy_for(m)
        if p is not None:
            jobs[m.name] = (p.job, p.group)
    settings = resolve_settings(platform.nomad, os.environ, lambda f: Path(f).read_text(),
                                nomad_address, None if token_file is None else str(token_file))
    return NomadScaleTarget(nomad_client(settings, timeout_s=10.0), jobs)


async def _run_until_signal(scaler: Autoscaler) -> None:
    import asyncio
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await scaler.run(stop)


def print_explain(decisions: list[ScalingDecision], console: Console) -> None:
    """One rich table per model: check, query, value, vote; then the decision."""
    from rich.table import Table

    for d in decisions:
        table = Table(title=f"model {d.model}: current {d.current}", title_justify="left")
        for col in ("check", "query", "value", "vote"):
            table.add_column(col, overflow="fold")
        for r in d.checks:
            v = r.vote
            value = "-" if v.value is None else f"{v.value:g}"
            if v.error is not None:
                vote = f"error ({v.on_error}): {v.error}"
            else:
                direction = v.direction(d.current)
                vote = direction if direction == "none" else f"{direction} to {v.desired}"
            table.add_row(v.check, r.query, value, vote)
        console.print(table)
        verb = "would scale" if d.action in ("scale", "dry-run") else d.action
        console.print(
            f"  decision: {d.direction} {d.current} -> {d.desired} ({verb}): {d.reason}",
            markup=False,
            highlight=False,
        )
