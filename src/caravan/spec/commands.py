"""CLI: ``caravan validate SPEC`` checks a platform spec and prints every error with its path.

Exit codes: 0 valid, 1 invalid (each error on its own line), 2 unreadable file.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from caravan.spec import SpecError, load_spec


def register(app: typer.Typer) -> None:
    """Add ``validate`` to ``app``."""
    app.command("validate")(validate)


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
