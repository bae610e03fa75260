"""``PrometheusMetricsSource``: PromQL queries over Prometheus' HTTP API.

``GET {base}/api/v1/query?query=...&timeout=...`` (instant) and
``GET {base}/api/v1/query_range?query=...&start=...&end=...&step=...`` (range; what
checks use, like nomad-autoscaler's Prometheus APM plugin, which queries a check's
``query_window`` at a 1 s step: ``plugins/builtin/apm/prometheus/plugin/plugin.go``
``QueryMultiple``) (https://prometheus.io/docs/prometheus/latest/querying/api/).
A query must give exactly one series (or a scalar); zero or several series, NaN/Inf
(instant) or no finite point (range), HTTP or network errors and timeouts all raise
``MetricsError`` naming the query, so a missing signal is a check error and never a
silent 0. Thread-safe (no shared mutable state; one HTTP request per call).
"""

from __future__ import annotations

import math
from typing import Any

from caravan.autoscaler.ports import MetricsError
from caravan.observability.prometheus_api import PrometheusAPI, PrometheusError


class PrometheusMetricsSource:
    """Implements ``MetricsSource`` over ``caravan.observability.prometheus_api``.
    ``base_url`` like ``http://127.0.0.1:9090``; ``timeout_s`` bounds the whole HTTP
    request (and is passed to Prometheus too). ValueError on a bad URL or timeout."""

    def __init__(self, base_url: str, timeout_s: float = 5.0) -> None:
        self.api = PrometheusAPI(base_url, timeout_s)
        self.base_url = self.api.base_url
        self.timeout_s = timeout_s

    def query(self, promql: str) -> float:
        """The single value of ``promql`` now. Raises MetricsError (see module doc)."""
        try:
            body = self.api.query(promql)
        except PrometheusError as exc:
            raise MetricsError(f"query {promql!r}: {exc}") from None
        return single_value(body, promql)

    def query_range(self, promql: str, start: float, end: float,
                    step_s: float) -> list[tuple[float, float]]:
        """The finite points of ``promql`` from ``start`` to ``end`` every ``step_s``."""
        try:
            body = self.api.query_range(promql, start, end, step_s)
        except PrometheusError as exc:
            raise MetricsError(f"query {promql!r}: {exc}") from None
        return series_points(body, promql)


def single_value(body: Any, promql: str) -> float:
    """The one value in an ``/api/v1/query`` answer. Pure; raises MetricsError naming ``promql``."""
    if not isinstance(body, dict) or body.get("status") != "success":
        raise MetricsError(f"query {promql!r}: Prometheus answered {str(body)[:200]}")
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return _finite(result, promql)
    if kind != "vector" or not isinstance(result, list):
        raise MetricsError(f"query {promql!r}: expected an instant vector, got {kind}")
    if len(result) != 1:
        labels = [r.get("metric", {}) for r in result[:3]]
        what = (
            "no series (is the metric scraped yet?)"
            if not result
            else f"{len(result)} series {labels}"
        )
        raise MetricsError(
            f"query {promql!r}: expected exactly one series, got {what}; aggregate it (sum, max)"
        )
    return _finite(result[0].get("value"), promql)


def _finite(pair: Any, promql: str) -> float:
    try:
        value = float(pair[1])
    except (TypeError, ValueError, IndexError):
        raise MetricsError(f"query {promql!r}: malformed sample {pair!r}") from None
    if math.isnan(value) or math.isinf(value):
        what = "NaN" if math.isnan(value) else "infinite"
        raise MetricsError(f"query {promql!r}: value is {what} (no data in the window?)")
    return value


def series_points(body: Any, promql: str) -> list[tuple[float, float]]:
    """The finite (time, value) points of the one series in a ``/api/v1/query_range``
    answer, oldest first. Pure; raises MetricsError naming ``promql``."""
    if not isinstance(body, dict) or body.get("status") != "success":
        raise MetricsError(f"query {promql!r}: Prometheus answered {str(body)[:200]}")
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind != "matrix" or not isinstance(result, list):
        raise MetricsError(f"query {promql!r}: expected a range (matrix), got {kind}")
    if len(result) != 1:
        labels = [r.get("metric", {}) for r in result[:3]]
        what = "no series (is the metric scraped yet?)" if not result else \
            f"{len(result)} series {labels}"
        raise MetricsError(
            f"query {promql!r}: expected exactly one series, got {what}; aggregate it (sum, max)"
        )
    points = []
    for pair in result[0].get("values") or []:
        try:
            t, v = float(pair[0]), float(pair[1])
        except (TypeError, ValueError, IndexError):
            raise MetricsError(f"query {promql!r}: malformed sample {pair!r}") from None
        if math.isfinite(v):
            points.append((t, v))
    if not points:
        raise MetricsError(f"query {promql!r}: no finite value in the range (no data?)")
    return points
