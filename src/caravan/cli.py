"""The ``caravan`` command line.

Each area registers its own commands from a small ``commands`` module
(``register(app)``), so this file stays a table of contents:

  validate                      spec checking (here)
  replica                       caravan.triton.commands    real tritonserver, simulated vLLM engine
  xds                           caravan.xds.commands       the xDS control plane
  up, demo                      caravan.local.commands     whole stack on 127.0.0.1
  bench                         caravan.bench.commands     load benchmark
  render, deploy                caravan.render.commands    Nomad HCL, Envoy, Triton, Docker
  autoscale                     caravan.autoscaler.commands
  panels                        caravan.observability.commands   a model's key panels as a PNG
"""

from __future__ import annotations

import importlib
from pathlib import Path

import typer
from rich.console import Console

from caravan.spec import SpecError, load_spec

app = typer.Typer(
    name="caravan",
    help="Nomad-native LLM serving: Triton+vLLM replicas behind Envoy, driven by an xDS control plane.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMAND_MODULES = (
    "caravan.triton.commands",
    "caravan.xds.commands",
    "caravan.local.commands",
    "caravan.bench.commands",
    "caravan.render.commands",
    "caravan.autoscaler.commands",
    "caravan.observability.commands",
)


@app.callback()
def _main() -> None:
    """Nomad-native LLM serving: Triton+vLLM replicas behind Envoy, driven by an xDS control plane."""


@app.command()
def validate(spec: Path = typer.Argument(..., help="platform spec YAML")) -> None:
    """Validate a platform spec; print every error with its path."""
    console = Console(stderr=True)
    try:
        ps = load_spec(spec)
    except SpecError as exc:
        console.print(f"[red]{exc.source}: {len(exc.errors)} error(s)[/red]")
        for err in exc.errors:
            console.print(f"  {err}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    except OSError as exc:
        console.print(f"[red]cannot read {spec}: {exc.strerror}[/red]")
        raise typer.Exit(2) from None
    names = ", ".join(m.name for m in ps.models)
    Console().print(f"[green]ok[/green]: {spec}: {len(ps.models)} model(s): {names}")


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_all()
