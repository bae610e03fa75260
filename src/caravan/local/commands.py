"""``caravan up`` and ``caravan demo``: the local stack, and a sweep through it.

Thin: options -> ``StackConfig`` / ``DemoConfig`` -> ``caravan.local.stack_runs`` ->
exit code (``caravan.exits``: 1 for an invalid spec or a failed run, 2 for a bad flag
or an unreadable spec). Imported only when one of these commands runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from caravan.exits import errors_exit, read_spec
from caravan.local import stack_runs
from caravan.local.stack_runs import DemoConfig, StackConfig

SPEC_ARG = typer.Argument(Path("examples/platform.yaml"), help="platform spec YAML")


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(demo)


def up(
    spec: Path = SPEC_ARG,
    state_dir: Path = typer.Option(None, help="logs, registry, rendered configs (default: spec's local.state_dir)"),
    time_scale: float = typer.Option(None, help="simulated durations x this (default: spec's local.time_scale)"),
    prometheus: bool = typer.Option(True, help="start Prometheus when installed"),
    autoscale: bool = typer.Option(False, help="run the autoscaler against the local replicas"),
) -> None:
    """Start the whole serving stack on 127.0.0.1 and keep it running until Ctrl-C / SIGTERM.
    One per state directory. A dead Envoy, control plane or Prometheus is restarted; one
    that keeps dying stops the stack (exit 1, naming it)."""
    with errors_exit(""):
        config = StackConfig(read_spec(spec), state_dir, time_scale, prometheus, autoscale)
    raise typer.Exit(stack_runs.serve(config, Console()))


def demo(
    spec: Path = SPEC_ARG,
    state_dir: Path = typer.Option(None, help="where logs, registry and rendered configs go"),
    time_scale: float = typer.Option(None, help="simulated durations x this (default: spec's local.time_scale)"),
    concurrency: str = typer.Option("1,5,10,25,50,100", help="comma-separated concurrency levels"),
    requests: str = typer.Option(None, help="requests per level, comma-separated (default: scaled to the level)"),
    output: Path = typer.Option(Path("benchmarks/results/demo"), help="JSON/CSV/PNG output prefix"),
    prometheus: bool = typer.Option(True, help="start Prometheus when installed"),
    autoscale: bool = typer.Option(False, help="instead of the sweep: load step -> scale up -> calm -> drain down"),
) -> None:
    """`caravan up` + a concurrency sweep through Envoy, a latency table, then shutdown."""
    with errors_exit(""):
        stack = StackConfig(read_spec(spec), state_dir, time_scale, prometheus, autoscale)
        config = DemoConfig.parse(stack, concurrency, requests, output)
    console = Console(width=None if sys.stdout.isatty() else 140)
    raise typer.Exit(stack_runs.demo(config, console))
