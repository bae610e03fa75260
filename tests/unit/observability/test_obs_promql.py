"""caravan.observability.promql.metric_names: which metrics a PromQL expression reads."""

from __future__ import annotations

import pytest

from caravan.observability.promql import PromQLSyntaxError, metric_names

CASES = [
    ("plain", "up", {"up"}),
    ("colon names", "rate(vllm:generation_tokens_total[1m])", {"vllm:generation_tokens_total"}),
    ("matchers skipped", 'x{a="b",c=~"d|e"} / y{model="$model"}', {"x", "y"}),
    ("by clause", "sum by (model, le) (rate(h_bucket[$__rate_interval]))", {"h_bucket"}),
    ("trailing by", "sum(rate(a_total[5m])) by (instance)", {"a_total"}),
    ("on and group_left", "a / on(model) group_left(version) b", {"a", "b"}),
    ("set operators", "a > 0 unless on(model) b or c and d", {"a", "b", "c", "d"}),
    ("strings", 'label_replace(m, "model", "$1", "envoy_cluster_name", "model-(.+)")', {"m"}),
    ("numbers and durations", "histogram_quantile(0.95, x) > 1e3 offset 5m", {"x"}),
    ("functions not metrics", "clamp_min(vector(1), scalar(z))", {"z"}),
    ("bool modifier", "a == bool 1", {"a"}),
    ("subquery", "max_over_time(rate(c[1m])[30m:1m])", {"c"}),
    ("grafana braces var", "rate(c{job=~\"${job}\"}[${__rate_interval}])", {"c"}),
    ("comment", "a # b\n", {"a"}),
]


@pytest.mark.parametrize(("expr", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_metric_names(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


@pytest.mark.parametrize("expr", ["rate(a[1m]", "a & b", "x{a=\"b\""],
                         ids=["unclosed", "bad char", "open brace"])
def test_bad_expressions_raise(expr: str) -> None:
    with pytest.raises(PromQLSyntaxError):
        metric_names(expr)
