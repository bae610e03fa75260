"""panel_plot: parsing query_range answers, legends, and drawing from canned data."""

from __future__ import annotations

from pathlib import Path

import pytest

from caravan.observability import panel_plot as pp

MATRIX = {
    "status": "success",
    "data": {
        "resultType": "matrix",
        "result": [
            {
                "metric": {"model": "m", "type": "cds"},
                "values": [[100, "1"], [101, "2.5"], [102, "NaN"]],
            },
        ],
    },
}


def test_parse_matrix() -> None:
    (s,) = pp.parse_matrix(MATRIX)
    assert s.labels == (("model", "m"), ("type", "cds"))
    assert s.times == (100.0, 101.0, 102.0)
    assert s.values[:2] == (1.0, 2.5)


ERROR_CASES = [
    (
        "bad data",
        {"status": "error", "errorType": "bad_data", "error": "parse error"},
        "bad_data: parse error",
    ),
    (
        "vector",
        {"status": "success", "data": {"resultType": "vector", "result": []}},
        "expected a matrix",
    ),
]


@pytest.mark.parametrize(
    ("doc", "message"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_parse_matrix_errors(doc: dict[str, object], message: str) -> None:
    with pytest.raises(pp.PrometheusQueryError, match=message):
        pp.parse_matrix(doc)


LEGEND_CASES = [
    ("template", "{{type}} on {{ model }}", (("model", "m"), ("type", "cds")), "cds on m"),
    ("missing label", "{{nope}}", (("model", "m"),), ""),
    ("fixed text", "p95", (("model", "m"),), "p95"),
    ("auto", "__auto", (("__name__", "x"), ("model", "m")), "model=m"),
    ("auto no labels", "", (("__name__", "x"),), "x"),
]


@pytest.mark.parametrize(
    ("template", "labels", "expected"),
    [c[1:] for c in LEGEND_CASES],
    ids=[c[0] for c in LEGEND_CASES],
)
def test_legend(template: str, labels: tuple[tuple[str, str], ...], expected: str) -> None:
    assert pp.legend(template, labels) == expected


class CannedSource:
    """A RangeSource answering every query with one rising series (test seam, no HTTP)."""

    def __init__(self) -> None:
        self.queries: list[tuple[str, float, float, float]] = []

    def query_range(
        self, expr: str, start_s: float, end_s: float, step_s: float
    ) -> list[pp.Series]:
        self.queries.append((expr, start_s, end_s, step_s))
        if "xds" in expr:
            return []
        n = int((end_s - start_s) / step_s) + 1
        times = tuple(start_s + i * step_s for i in range(n))
        return [pp.Series((("model", "m"),), times, tuple(float(i) for i in range(n)))]


def test_fetch_expands_variables_and_window() -> None:
    source = CannedSource()
    panels = pp.fetch_panels(source, "llama", end_s=1000.0, window_s=120.0, step_s=2.0)
    assert [p.title for p in panels] == list(pp.KEY_PANELS)
    assert all("$" not in q[0] for q in source.queries)
    assert any('model="llama"' in q[0] for q in source.queries)
    assert any("[60s]" in q[0] for q in source.queries)  # $__rate_interval
    assert {q[1:] for q in source.queries} == {(880.0, 1000.0, 2.0)}


def test_draw_panels_writes_png(tmp_path: Path) -> None:
    panels = pp.fetch_panels(CannedSource(), "m", end_s=1000.0, window_s=60.0, step_s=1.0)
    out = tmp_path / "sub" / "panels.png"
    drawn = pp.draw_panels(panels, out, "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert drawn["xDS pushes/s"] == 0  # "No data" panel
    assert drawn["Time to first token"] == 4  # p50, p95, p99, SLO
    assert drawn["Requests/s"] == 2


def test_plot_panels_rejects_bad_window(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="window_s"):
        pp.plot_panels("http://127.0.0.1:9", "m", tmp_path / "x.png", window_s=0)


def test_unreachable_prometheus_is_a_clear_error(tmp_path: Path) -> None:
    from caravan.local.process import free_port

    with pytest.raises(pp.PrometheusQueryError, match=r"Prometheus at .* unreachable"):
        pp.PrometheusRange(f"http://127.0.0.1:{free_port()}", timeout_s=2).query_range(
            "up", 0, 1, 1
        )
