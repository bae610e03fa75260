"""Console report in the reference form (pure formatting + a rich Table).

Columns: ``Concurrency`` (or ``Rate (req/s)``) | ``Total requests`` |
``Mean response time`` | ``P95 latency`` | ``Errors`` | ``TTFT p50`` | ``ITL mean`` |
``Tokens/s`` (+ ``Goodput`` when SLOs were given). Response times are end-to-end,
shown in seconds like the reference table (``4.23s``, or ms below 1 s); TTFT and ITL
in ms.
"""

from __future__ import annotations

from rich.table import Table

from caravan.bench.arrivals import AXIS_TITLES
from caravan.bench.results import LevelResult, SweepResult


def fmt_s(ms: float) -> str:
    """A response time: seconds with 2 decimals like the reference (``4230.0`` ->
    ``4.23s``) from 1 s up; below that in ms (``12.3 ms``), so fast runs stay readable."""
    return f"{ms / 1000.0:.2f}s" if ms >= 1000.0 else fmt_ms(ms)


def fmt_ms(ms: float) -> str:
    """``12.345`` -> ``12.3 ms``; ``1234.5`` -> ``1234 ms``."""
    return f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def fmt_errors(lv: LevelResult) -> str:
    """``0``, or ``3 (UNAVAILABLE 2, DEADLINE_EXCEEDED 1)``."""
    n = lv.summary.error_count
    if n == 0:
        return "0"
    by_count = sorted(lv.summary.errors.items(), key=lambda kv: -kv[1])
    parts = ", ".join(f"{k} {v}" for k, v in by_count)
    return f"{n} ({parts})"


def level_value(lv: LevelResult) -> str:
    cap = f" (cap {lv.level.max_concurrency})" if lv.level.max_concurrency else ""
    return f"{lv.level.value:g}{cap}"


def headers(result: SweepResult) -> list[str]:
    first = AXIS_TITLES[result.shape]
    cols = [first, "Total requests", "Mean response time", "P95 latency", "Errors",
            "TTFT p50", "ITL mean", "Tokens/s"]
    if any(lv.summary.slos for lv in result.levels):
        cols.append("Goodput")
    return cols


def table_rows(result: SweepResult) -> list[list[str]]:
    """One row of strings per level, matching ``headers(result)``."""
    with_slo = any(lv.summary.slos for lv in result.levels)
    rows = []
    for lv in result.levels:
        s = lv.summary
        ttft = fmt_ms(s.ttft.median) if s.ttft.count else "-"
        itl = fmt_ms(s.itl.mean) if s.itl.count else "-"
        row = [
            level_value(lv), str(s.requests), fmt_s(s.e2e.mean), fmt_s(s.e2e.p95),
            fmt_errors(lv), ttft, itl, f"{s.output_token_throughput:.0f}",
        ]
        if with_slo:
            pct = 100.0 * s.good / s.requests if s.requests else 0.0
            row.append(f"{s.goodput:.2f} req/s ({pct:.0f}%)")
        rows.append(row)
    return rows


def reference_table(result: SweepResult, title: str | None = None) -> Table:
    """The results as a rich ``Table`` in the reference benchmark's form."""
    meta = result.meta
    default = f"caravan bench: {meta.get('model', '?')} at {meta.get('url', '?')}"
    table = Table(title=title or default)
    for i, h in enumerate(headers(result)):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in table_rows(result):
        table.add_row(*row)
    return table


def markdown_table(result: SweepResult) -> str:
    """The same table as GitHub markdown (for READMEs and reports)."""
    hs = headers(result)
    lines = ["| " + " | ".join(hs) + " |", "|" + "---|" * len(hs)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(result)]
    return "\n".join(lines)
