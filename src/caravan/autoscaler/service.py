"""What ``caravan autoscale`` runs: the autoscaler against Prometheus and Nomad (or,
read-only, Prometheus' own replica counts), once or until a signal.

``AutoscaleConfig`` holds the validated options; ``build(config)`` makes the
autoscaler (ConfigError / ValueError naming a bad URL or Nomad setting);
``run(config, built, console)`` evaluates once (``--once``, ``--explain``) or runs
until SIGTERM / SIGINT, and returns the exit code (1 when a decision failed).
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from rich.console import Console
from rich.table import Table

from caravan.autoscaler.fleet import PrometheusReplicaCounts
from caravan.autoscaler.handler import Autoscaler, ScalingDecision, build_autoscaler
from caravan.autoscaler.nomad import NomadScaleTarget
from caravan.autoscaler.ports import MetricsSource, ScaleTarget
from caravan.autoscaler.prometheus import PrometheusMetricsSource
from caravan.errors import ConfigError
from caravan.exits import FAILED
from caravan.logs import setup_logging
from caravan.nomad.client import nomad_client, resolve_nomad_settings
from caravan.spec import PlatformSpec
from caravan.spec.autoscaling import policy_for

COUNTS_FROM = ("nomad", "prometheus")


@dataclass(frozen=True)
class AutoscaleConfig:
    """``caravan autoscale``'s options. ``counts_from`` ``prometheus`` is read-only:
    it needs ``explain`` or ``dry_run``. ``models`` empty: every model."""

    spec: PlatformSpec
    prometheus: str
    nomad_address: str | None = None
    nomad_token_file: Path | None = None
    counts_from: str = "nomad"
    models: tuple[str, ...] = ()
    once: bool = False
    explain: bool = False
    dry_run: bool = False
    metrics_port: int | None = None
    query_timeout_s: float = 5.0
    metrics_address: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.counts_from not in COUNTS_FROM:
            raise ConfigError(f"--counts-from: {self.counts_from!r}: expected nomad or prometheus")
        if self.counts_from == "prometheus" and not (self.explain or self.dry_run):
            raise ConfigError("--counts-from: prometheus counts are read-only: add --explain or --dry-run")


@dataclass(frozen=True)
class Built:
    scaler: Autoscaler
    registry: CollectorRegistry


def build(config: AutoscaleConfig) -> Built:
    """The autoscaler for ``config``; raises ValueError naming a bad setting."""
    metrics = PrometheusMetricsSource(config.prometheus, timeout_s=config.query_timeout_s)
    target = scale_target(config.spec, config.counts_from, config.nomad_address,
                          config.nomad_token_file, metrics)
    registry = CollectorRegistry()
    scaler = build_autoscaler(config.spec, metrics, target, registry=registry,
                              dry_run=config.dry_run or config.explain,
                              models=list(config.models) or None)
    return Built(scaler, registry)


def run(config: AutoscaleConfig, built: Built, console: Console) -> int:
    """Evaluate once (printing the explanation with ``explain``) or run until a signal."""
    if config.explain or config.once:
        if not config.explain:
            setup_logging("autoscaler")
        decisions = built.scaler.once(act=not config.explain)
        if config.explain:
            print_explain(decisions, console)
        return FAILED if any(d.action == "error" for d in decisions) else 0
    setup_logging("autoscaler")
    if config.metrics_port is not None:
        start_http_server(config.metrics_port, addr=config.metrics_address, registry=built.registry)
    asyncio.run(_run_until_signal(built.scaler))
    return 0


def scale_target(
    platform: PlatformSpec, counts_from: str, nomad_address: str | None,
    token_file: Path | None, metrics: MetricsSource,
) -> ScaleTarget:
    """The scale target; Nomad's client from ``caravan.nomad.client`` (flag > env > spec).
    Raises ValueError naming a bad setting."""
    if counts_from == "prometheus":
        return PrometheusReplicaCounts(metrics)
    jobs = {}
    for m in platform.models:
        p = policy_for(m)
        if p is not None:
            jobs[m.name] = (p.job, p.group)
    settings = resolve_nomad_settings(platform.nomad, os.environ, lambda f: Path(f).read_text(),
                                nomad_address, None if token_file is None else str(token_file))
    return NomadScaleTarget(nomad_client(settings, timeout_s=10.0), jobs)


async def _run_until_signal(scaler: Autoscaler) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await scaler.run(stop)


def print_explain(decisions: list[ScalingDecision], console: Console) -> None:
    """One rich table per model: check, query, value, vote; then the decision."""
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
