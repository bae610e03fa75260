"""PNG plots (matplotlib, Agg backend): latency percentiles and throughput vs load.

``plot_sweep`` draws one run: left, end-to-end p50/p95/p99 and TTFT p50/p95 (s)
against concurrency or rate; right, output tokens/s and requests/s. ``plot_runs``
overlays several runs (labelled) for ``caravan bench compare --plot``. Both write a
PNG file and return its path. Safe to call from any thread (a new Figure each time,
no pyplot global state). matplotlib (~1 s of imports) is loaded by the first plot, in
``_figure``, so commands that may not plot (``--no-plot``, their ``--help``) do not pay
for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from caravan.bench.arrivals import AXIS_TITLES
from caravan.bench.results import SweepResult


def _xlabel(result: SweepResult) -> str:
    title = AXIS_TITLES[result.shape].lower()
    return "request rate (req/s)" if title.startswith("rate") else title


def _xs(result: SweepResult) -> list[float]:
    return [lv.level.value for lv in result.levels]


def _figure() -> Figure:
    """A new 11 x 4.2 in figure on the Agg canvas (imports matplotlib the first time)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def plot_sweep(result: SweepResult, path: Path, title: str = "") -> Path:
    fig = _figure()
    lat, thr = fig.subplots(1, 2)
    xs = _xs(result)
    series = [("e2e p50", "e2e", "median", "-"), ("e2e p95", "e2e", "p95", "-"),
              ("e2e p99", "e2e", "p99", "-"), ("TTFT p50", "ttft", "median", "--"),
              ("TTFT p95", "ttft", "p95", "--")]
    for label, metric, stat, style in series:
        ys = [getattr(getattr(lv.summary, metric), stat) / 1000.0 for lv in result.levels]
        lat.plot(xs, ys, style, marker="o", label=label)
    lat.set(xlabel=_xlabel(result), ylabel="latency (s)", title="latency percentiles")
    lat.grid(alpha=0.3)
    lat.legend(fontsize=8)
    thr.plot(xs, [lv.summary.output_token_throughput for lv in result.levels], marker="o",
             label="output tokens/s")
    thr.set(xlabel=_xlabel(result), ylabel="output tokens/s", title="throughput")
    thr.grid(alpha=0.3)
    rps = thr.twinx()
    rps.plot(xs, [lv.summary.request_throughput for lv in result.levels], "--", marker="s",
             color="tab:orange", label="requests/s")
    rps.set_ylabel("requests/s")
    rps.legend(loc="lower right", fontsize=8)
    thr.legend(loc="upper left", fontsize=8)
    fig.suptitle(title or f"{result.meta.get('model', '')} @ {result.meta.get('url', '')}")
    return _save(fig, path)


def plot_runs(results: Sequence[SweepResult], labels: Sequence[str], path: Path) -> Path:
    """Overlay runs: mean and p95 end-to-end latency, and output tokens/s."""
    fig = _figure()
    lat, thr = fig.subplots(1, 2)
    for result, label in zip(results, labels, strict=True):
        xs = _xs(result)
        mean = [lv.summary.e2e.mean / 1000.0 for lv in result.levels]
        p95 = [lv.summary.e2e.p95 / 1000.0 for lv in result.levels]
        (line,) = lat.plot(xs, mean, marker="o", label=f"{label} mean")
        lat.plot(xs, p95, "--", marker="^", color=line.get_color(), label=f"{label} p95")
        thr.plot(xs, [lv.summary.output_token_throughput for lv in result.levels],
                 marker="o", label=label)
    xlabel = _xlabel(results[0]) if results else "load"
    lat.set(xlabel=xlabel, ylabel="end-to-end latency (s)", title="latency")
    thr.set(xlabel=xlabel, ylabel="output tokens/s", title="throughput")
    for ax in (lat, thr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)
