"""Compare bench runs side by side (pure rows + a rich Table).

Levels are matched by (shape, value). One row per level and metric shows every run's
figure and, for runs after the first, the ratio ``run / first`` (``1.25x`` means 25%
higher: worse for latency, better for throughput). A run lacking a level shows ``-``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from caravan.bench.results import LevelResult, SweepResult, read_json
from caravan.bench.stats import Summary
from caravan.errors import ConfigError


@dataclass(frozen=True)
class Metric:
    """One compared figure: ``Summary`` attribute ``path``, times ``scale`` for display."""

    title: str
    unit: str
    scale: float
    path: tuple[str, ...]

    def value(self, s: Summary) -> float:
        v: object = s
        for name in self.path:
            v = getattr(v, name)
        assert isinstance(v, (int, float))
        return float(v)


METRICS: tuple[Metric, ...] = (
    Metric("Mean response time", "s", 0.001, ("e2e", "mean")),
    Metric("P95 latency", "s", 0.001, ("e2e", "p95")),
    Metric("TTFT p50", "ms", 1.0, ("ttft", "median")),
    Metric("Tokens/s", "", 1.0, ("output_token_throughput",)),
    Metric("Requests/s", "", 1.0, ("request_throughput",)),
)


def ratio(a: float, b: float) -> str:
    """``b / a`` as ``1.23x``; ``-`` when ``a`` is 0."""
    return f"{b / a:.2f}x" if a else "-"


def _by_key(result: SweepResult) -> dict[tuple[str, float], LevelResult]:
    return {(lv.level.shape.value, lv.level.value): lv for lv in result.levels}


def level_keys(results: Sequence[SweepResult]) -> list[tuple[str, float]]:
    """Every (shape, value) in any run, in first-seen order."""
    keys: list[tuple[str, float]] = []
    for r in results:
        for lv in r.levels:
            k = (lv.level.shape.value, lv.level.value)
            if k not in keys:
                keys.append(k)
    return keys


def compare_headers(labels: Sequence[str]) -> list[str]:
    """``Level | Metric | <run>... | <run>/<first>...``."""
    return ["Level", "Metric", *labels, *(f"{lab}/{labels[0]}" for lab in labels[1:])]


def _fmt(x: float) -> str:
    return f"{x:.2f}" if abs(x) < 100 else f"{x:.0f}"


def compare_rows(results: Sequence[SweepResult]) -> list[list[str]]:
    """Rows matching ``compare_headers``: one per (level, metric)."""
    maps = [_by_key(r) for r in results]
    rows = []
    for key in level_keys(results):
        shape, value = key
        for i, m in enumerate(METRICS):
            vals = [m.value(mp[key].summary) if key in mp else None for mp in maps]
            unit = f" ({m.unit})" if m.unit else ""
            row = [f"{shape} {value:g}" if i == 0 else "", f"{m.title}{unit}"]
            row += ["-" if v is None else _fmt(v * m.scale) for v in vals]
            base = vals[0]
            row += ["-" if v is None or base is None else ratio(base, v) for v in vals[1:]]
            rows.append(row)
    return rows


def compare_table(results: Sequence[SweepResult], labels: Sequence[str]) -> Table:
    if len(results) != len(labels) or not results:
        raise ValueError("compare: need one label per run and at least one run")
    table = Table(title="caravan bench compare")
    for i, h in enumerate(compare_headers(labels)):
        table.add_column(h, justify="left" if i < 2 else "right")
    for row in compare_rows(results):
        table.add_row(*row)
    return table


def load_runs(paths: Sequence[Path], labels: str | None) -> tuple[list[SweepResult], list[str]]:
    """The runs in ``paths`` and their labels: ``labels`` (comma-separated, one per run),
    else each file's stem, or its directory's name when every file has the same stem.
    ConfigError names the unreadable file or the label count."""
    try:
        loaded = [read_json(p) for p in paths]
    except OSError as exc:
        raise ConfigError(f"{exc.filename}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    names = labels.split(",") if labels else [_default_label(p, paths) for p in paths]
    if len(names) != len(paths):
        raise ConfigError(f"--labels: got {len(names)} labels for {len(paths)} runs")
    return loaded, names


def _default_label(p: Path, paths: Sequence[Path]) -> str:
    stems = {r.stem for r in paths}
    return p.parent.name if len(stems) < len(paths) and p.parent.name else p.stem
