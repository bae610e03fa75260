"""``caravan up`` and ``caravan demo``: the local stack, and a sweep through it."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import typer

SPEC_ARG = typer.Argument(Path("examples/platform.yaml"), help="platform spec YAML")


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(demo)


def _load(spec: Path):  # type: ignore[no-untyped-def]
    from rich.console import Console

    from caravan.spec import SpecError, load_spec

    try:
        return load_spec(spec)
    except SpecError as exc:
        Console(stderr=True).print(str(exc), markup=False)
        raise typer.Exit(1) from None


def _sigterm_as_interrupt() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _start(session: Any, console: Any) -> None:
    """Start the session and print its banner; a start failure exits 1 with its reason
    (the session's stop(), in the caller's ``finally``, ends what was started)."""
    from caravan.local.supervisor import StackError

    try:
        with console.status("starting replicas, control plane, Envoy ..."):
            session.start()
    except (StackError, RuntimeError) as exc:
        console.print(f"[red]caravan: could not start the local stack:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    console.print(session.banner())


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
    from rich.console import Console

    from caravan.local.session import LocalSession

    ps = _load(spec)
    console = Console()
    _sigterm_as_interrupt()
    session = LocalSession.create(ps, state_dir, time_scale, prometheus, autoscale)
    failure = None
    try:
        _start(session, console)
        failure = session.stack.wait_failure()
        console.print(f"[red]caravan: the local stack stopped serving:[/red] {failure}", highlight=False)
    except KeyboardInterrupt:
        console.print("stopping ...")
    finally:
        session.stop()
        console.print("stopped; no process left behind")
    if failure is not None:
        raise typer.Exit(1)


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
    from rich.console import Console

    from caravan.local.demo import run_autoscale_demo, run_demo
    from caravan.local.session import LocalSession

    ps = _load(spec)
    console = Console(width=None if sys.stdout.isatty() else 140)
    _sigterm_as_interrupt()
    session = LocalSession.create(ps, state_dir, time_scale, prometheus, autoscale)
    try:
        _start(session, console)
        if autoscale:
            ok = run_autoscale_demo(session, console)
        else:
            ok = run_demo(session, console, concurrency, requests, output)
    except KeyboardInterrupt:
        ok = False
    finally:
        session.stop()
    raise typer.Exit(0 if ok else 1)
