"""A screenshot-like PNG of the key per-model dashboard panels, drawn with matplotlib
from Prometheus' ``query_range`` API.

The panels and their PromQL are the Grafana per-model dashboard's own
(``grafana.model_panels``), so the PNG shows what Grafana would. Pure parts
(``parse_matrix``, ``legend``, ``draw_panels``) are separate from the one I/O
adapter (``PrometheusRange``, behind the ``RangeSource`` port). Times are Unix
seconds. Not thread-safe (matplotlib figures); call from one thread.

Run: ``python -m caravan.observability.panel_plot --prometheus http://127.0.0.1:9090 --model M``.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from caravan.observability.grafana import PanelDef, model_panels
from caravan.observability.prometheus_api import PrometheusAPI, PrometheusError

KEY_PANELS = (
    "Requests/s",
    "Errors",
    "Time to first token",
    "End-to-end latency",
    "Tokens/s",
    "In-flight requests",
    "Replicas: desired vs running",
    "xDS pushes/s",
)


PrometheusQueryError = PrometheusError  # the panel plot's name for the one client's error


@dataclass(frozen=True)
class Series:
    labels: tuple[tuple[str, str], ...]
    times: tuple[float, ...]  # Unix seconds
    values: tuple[float, ...]


@dataclass(frozen=True)
class Line:
    label: str
    series: Series


@dataclass(frozen=True)
class PanelData:
    """One panel's lines over the window ``[start_s, end_s]`` (Unix seconds)."""

    title: str
    unit: str
    lines: tuple[Line, ...]
    start_s: float
    end_s: float


UNIT_LABELS = {"reqps": "req/s", "percentunit": "ratio", "s": "seconds", "short": ""}


class RangeSource(Protocol):
    """Runs a PromQL range query. Raises PrometheusQueryError on failure."""

    def query_range(
        self, expr: str, start_s: float, end_s: float, step_s: float
    ) -> list[Series]: ...


def parse_matrix(doc: dict[str, Any]) -> list[Series]:
    """Series from a ``/api/v1/query_range`` JSON answer; PrometheusQueryError if it is an error."""
    if doc.get("status") != "success":
        raise PrometheusQueryError(f"{doc.get('errorType', 'error')}: {doc.get('error', doc)}")
    data = doc["data"]
    if data.get("resultType") != "matrix":
        raise PrometheusQueryError(f"expected a matrix result, got {data.get('resultType')!r}")
    out = []
    for item in data["result"]:
        points = [(float(t), float(v)) for t, v in item["values"]]
        out.append(
            Series(
                tuple(sorted(item["metric"].items())),
                tuple(t for t, _ in points),
                tuple(v for _, v in points),
            )
        )
    return out


class PrometheusRange:
    """``RangeSource`` over ``caravan.observability.prometheus_api`` (``base_url`` like
    ``http://127.0.0.1:9090``)."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        self.api = PrometheusAPI(base_url, timeout_s)

    def query_range(self, expr: str, start_s: float, end_s: float, step_s: float) -> list[Series]:
        return parse_matrix(self.api.query_range(expr, start_s, end_s, step_s))


def legend(template: str, labels: tuple[tuple[str, str], ...]) -> str:
    """Grafana-style legend: ``{{label}}`` replaced by its value; empty/"__auto" -> labels."""
    values = dict(labels)
    if template in ("", "__auto"):
        shown = [f"{k}={v}" for k, v in labels if k != "__name__"]
        return ", ".join(shown) or values.get("__name__", "value")
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: values.get(m.group(1), ""), template)


def expand(expr: str, model: str, rate_interval: str) -> str:
    """Substitute the dashboard variables ``$model`` and ``$__rate_interval``."""
    return expr.replace("$__rate_interval", rate_interval).replace("$model", model)


def key_panels() -> tuple[PanelDef, ...]:
    """The per-model dashboard's key time-series panels, in ``KEY_PANELS`` order."""
    by_title = {p.title: p for p in model_panels() if p.kind == "timeseries"}
    return tuple(by_title[t] for t in KEY_PANELS)


def fetch_panels(
    source: RangeSource, model: str, end_s: float, window_s: float, step_s: float
) -> list[PanelData]:
    """Query every key panel's expressions over ``[end_s - window_s, end_s]``."""
    rate = f"{max(60, math.ceil(4 * step_s))}s"
    out = []
    for panel in key_panels():
        lines = [
            Line(legend(q.legend, s.labels), s)
            for q in panel.queries
            for s in source.query_range(
                expand(q.expr, model, rate), end_s - window_s, end_s, step_s
            )
        ]
        out.append(PanelData(panel.title, panel.unit, tuple(lines), end_s - window_s, end_s))
    return out


def draw_panels(panels: Sequence[PanelData], out_png: Path, title: str) -> dict[str, int]:
    """Draw a 2-column grid of panels into ``out_png``; returns title -> lines drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, math.ceil(len(panels) / 2))
    fig, axes = plt.subplots(rows, 2, figsize=(14, 3.2 * rows), squeeze=False)
    fig.patch.set_facecolor("#181b1f")
    drawn: dict[str, int] = {}
    for ax, panel in zip(axes.flat, panels, strict=False):
        drawn[panel.title] = _draw_one(ax, panel)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title, color="white")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90, facecolor=fig.get_facecolor())
    plt.close(fig)
    return drawn


def _draw_one(ax: Any, panel: PanelData) -> int:
    ax.set_facecolor("#111217")
    unit = UNIT_LABELS.get(panel.unit, panel.unit)
    ax.set_title(
        f"{panel.title} ({unit})" if unit else panel.title, color="white", fontsize=10, loc="left"
    )
    ax.set_xlim(0, panel.end_s - panel.start_s)
    ax.set_xlabel("seconds into the window", color="#ccccdc", fontsize=7)
    ax.tick_params(colors="#ccccdc", labelsize=7)
    ax.grid(color="#2c3235", linewidth=0.5)
    if not panel.lines:
        ax.text(0.5, 0.5, "No data", color="#ccccdc", ha="center", transform=ax.transAxes)
        return 0
    for line in panel.lines:
        xs = [t - panel.start_s for t in line.series.times]
        marker = "o" if len(xs) < 5 else None  # a lone sample must still show
        ax.plot(xs, line.series.values, label=line.label, lw=1.2, marker=marker, ms=3)
    ax.legend(fontsize=7, loc="upper left", facecolor="#181b1f", labelcolor="#ccccdc")
    return len(panel.lines)


def plot_panels(
    prometheus_url: str,
    model: str,
    out_png: str | Path,
    window_s: float = 600.0,
    clock: Callable[[], float] = time.time,
) -> dict[str, int]:
    """Query ``prometheus_url`` for ``model``'s key panels over the last ``window_s`` seconds
    and write a PNG grid to ``out_png``. Returns panel title -> number of lines drawn.
    Raises ValueError for a non-positive window, PrometheusQueryError if a query fails."""
    if window_s <= 0:
        raise ValueError(f"window_s: must be > 0 seconds (got {window_s})")
    step_s = max(1.0, window_s / 240)
    panels = fetch_panels(PrometheusRange(prometheus_url), model, clock(), window_s, step_s)
    return draw_panels(panels, Path(out_png), f"Caravan: {model} (last {window_s:g} s)")
