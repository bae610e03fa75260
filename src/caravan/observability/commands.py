"""CLI: ``caravan panels`` draws the key Grafana panels of one model from a running
Prometheus into a PNG (``caravan.observability.panel_plot``)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``panels`` command to ``app``."""
    app.command("panels")(panels)


def panels(
    model: str = typer.Option(..., "--model", help="model whose panels to draw"),
    prometheus: str = typer.Option("http://127.0.0.1:9090", "--prometheus", help="Prometheus base URL"),
    out: Path = typer.Option(Path("panels.png"), "--out", help="PNG to write"),
    window_s: float = typer.Option(600.0, "--window-s", help="seconds of history to draw"),
) -> None:
    """Draw a model's key panels (requests, errors, TTFT, latency, tokens, in-flight, replicas)."""
    from caravan.observability.panel_plot import PrometheusQueryError, plot_panels

    if window_s <= 0:
        raise typer.BadParameter(f"must be > 0 seconds (got {window_s})", param_hint="'--window-s'")
    try:
        drawn = plot_panels(prometheus, model, out, window_s)
    except (PrometheusQueryError, ValueError) as exc:
        typer.echo(f"caravan panels: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {out}: " + ", ".join(f"{title}: {n}" for title, n in drawn.items()))
