"""CLI: ``caravan panels`` draws the key Grafana panels of one model from a running
Prometheus into a PNG (``caravan.observability.panel_plot``).

Thin: options -> ``PanelsConfig`` -> ``plot_panels`` -> exit code (``caravan.exits``:
2 for a bad flag, 1 when Prometheus cannot answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from caravan.errors import ConfigError
from caravan.exits import errors_exit
from caravan.observability.panel_plot import plot_panels


def register(app: typer.Typer) -> None:
    """Add the ``panels`` command to ``app``."""
    app.command("panels")(panels)


@dataclass(frozen=True)
class PanelsConfig:
    """``model``'s panels from ``prometheus`` over the last ``window_s`` (> 0) seconds, to ``out``."""

    model: str
    prometheus: str = "http://127.0.0.1:9090"
    out: Path = Path("panels.png")
    window_s: float = 600.0

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ConfigError(f"--window-s: must be > 0 seconds (got {self.window_s:g})")


_D = PanelsConfig("")


def panels(
    model: str = typer.Option(..., "--model", help="model whose panels to draw"),
    prometheus: str = typer.Option(_D.prometheus, "--prometheus", help="Prometheus base URL"),
    out: Path = typer.Option(_D.out, "--out", help="PNG to write"),
    window_s: float = typer.Option(_D.window_s, "--window-s", help="seconds of history to draw"),
) -> None:
    """Draw a model's key panels (requests, errors, TTFT, latency, tokens, in-flight, replicas)."""
    with errors_exit("caravan panels"):
        config = PanelsConfig(model, prometheus, out, window_s)
        drawn = plot_panels(config.prometheus, config.model, config.out, config.window_s)
    typer.echo(f"wrote {out}: " + ", ".join(f"{title}: {n}" for title, n in drawn.items()))
