"""Parsing /api/v1/query answers: exactly one finite value, else an error naming the query."""

from __future__ import annotations

from typing import Any

import pytest

from caravan.autoscaler.ports import MetricsError
from caravan.autoscaler.prometheus import PrometheusMetricsSource, series_points, single_value


def _vec(*values: str) -> dict[str, Any]:
    result = [{"metric": {"i": str(i)}, "value": [1.0, v]} for i, v in enumerate(values)]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


OK = [
    ("one-series", _vec("2.5"), 2.5),
    ("scalar", {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}}, 3.0),
]


@pytest.mark.parametrize(("body", "value"), [c[1:] for c in OK], ids=[c[0] for c in OK])
def test_single_value(body: dict[str, Any], value: float) -> None:
    assert single_value(body, "q") == value


BAD = [
    ("empty", _vec(), "no series"),
    ("two-series", _vec("1", "2"), "2 series"),
    ("nan", _vec("NaN"), "NaN"),
    ("inf", _vec("+Inf"), "infinite"),
    ("error-status", {"status": "error", "error": "bad"}, "answered"),
    ("matrix", {"status": "success", "data": {"resultType": "matrix", "result": []}}, "matrix"),
]


@pytest.mark.parametrize(("body", "needle"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_answers_are_errors_naming_the_query(body: dict[str, Any], needle: str) -> None:
    with pytest.raises(MetricsError, match=needle) as info:
        single_value(body, 'my_query{a="b"}')
    assert "my_query" in str(info.value)


@pytest.mark.parametrize(
    ("url", "timeout"),
    [("localhost:9090", 1.0), ("http://x", 0.0)],
    ids=["no-scheme", "zero-timeout"],
)
def test_bad_settings_are_rejected(url: str, timeout: float) -> None:
    with pytest.raises(ValueError):
        PrometheusMetricsSource(url, timeout)


def _matrix(*series: list[tuple[float, str]]) -> dict[str, Any]:
    result = [{"metric": {"i": str(i)}, "values": [[t, v] for t, v in values]}
              for i, values in enumerate(series)]
    return {"status": "success", "data": {"resultType": "matrix", "result": result}}


def test_range_points_keep_finite_values_oldest_first() -> None:
    body = _matrix([(1.0, "2"), (2.0, "NaN"), (3.0, "+Inf"), (4.0, "5.5")])
    assert series_points(body, "q") == [(1.0, 2.0), (4.0, 5.5)]


@pytest.mark.parametrize(
    ("body", "needle"),
    [(_matrix(), "no series"), (_matrix([(1.0, "1")], [(1.0, "2")]), "2 series"),
     (_matrix([(1.0, "NaN")]), "no finite value"), (_vec("1"), "expected a range"),
     ({"status": "error", "error": "bad"}, "Prometheus answered")],
    ids=["empty", "two-series", "all-nan", "vector", "error"],
)
def test_range_answers_that_are_errors(body: dict[str, Any], needle: str) -> None:
    with pytest.raises(MetricsError, match=needle) as info:
        series_points(body, "rate(x[1m])")
    assert "rate(x[1m])" in str(info.value)
