"""Recording rules, alert rules and their generated promtool tests (pure)."""

from __future__ import annotations

import pytest

from caravan.observability import rules
from caravan.observability.alert_tests import alert_test_files
from caravan.observability.alerts import ALERTS, alert_groups
from caravan.observability.metric_names import is_exported, unknown_metrics
from caravan.observability.promql import metric_names
from caravan.spec import PlatformSpec, parse_spec


def _spec(**model: object) -> PlatformSpec:
    base = {"name": "m1", "engine": {"model": "x"}, "replicas": {"min": 1, "max": 3}}
    return parse_spec({"models": [{**base, **model}, {"name": "m2", "engine": {"model": "y"}}]})


def _constants(spec: PlatformSpec) -> dict[tuple[str, str], str]:
    group = rules.recording_groups(spec)[0]
    return {(r["record"], r["labels"]["model"]): r["expr"] for r in group["rules"]}


CONSTANT_CASES = [
    ("ttft ms to s", {"slo": {"ttft_ms": 1500}}, rules.SLO_TTFT, "vector(1.5)"),
    ("e2e ms to s", {"slo": {"e2e_ms": 250}}, rules.SLO_E2E, "vector(0.25)"),
    ("error ratio", {"slo": {"error_ratio": 0.01}}, rules.SLO_ERRORS, "vector(0.01)"),
    ("replicas max", {"replicas": {"min": 0, "max": 7}}, rules.REPLICAS_MAX, "vector(7)"),
    ("replicas min", {"replicas": {"min": 0, "max": 7}}, rules.REPLICAS_MIN, "vector(0)"),
    ("default ttft", {}, rules.SLO_TTFT, "vector(2)"),
]


@pytest.mark.parametrize(("model", "name", "expr"), [c[1:] for c in CONSTANT_CASES],
                         ids=[c[0] for c in CONSTANT_CASES])
def test_spec_constants(model: dict[str, object], name: str, expr: str) -> None:
    assert _constants(_spec(**model))[(name, "m1")] == expr


def test_every_model_gets_every_constant() -> None:
    keys = _constants(_spec()).keys()
    assert {(n, m) for n in rules.CONSTANTS for m in ("m1", "m2")} == set(keys)


def test_recorded_names_are_unique_and_complete() -> None:
    group = rules.recording_groups(_spec())[1]
    names = [r["record"] for r in group["rules"]]
    assert len(names) == len(set(names))
    wanted = {rules.REQUESTS_1M, rules.ERROR_RATIO_5M, rules.INFLIGHT_PER_REPLICA,
              rules.OUTPUT_TOKENS_1M, *rules.TTFT_Q.values(), *rules.E2E_Q.values()}
    assert wanted <= set(names)


def _all_exprs(spec: PlatformSpec) -> list[str]:
    groups = rules.recording_groups(spec) + alert_groups()
    return [r["expr"] for g in groups for r in g["rules"]]


def test_rules_read_only_known_metrics() -> None:
    spec = _spec()
    recorded = rules.recorded_names(spec)
    for expr in _all_exprs(spec):
        assert not unknown_metrics(metric_names(expr), recorded), expr


INVENTED = ("vllm:num_requests_running", "vllm:num_requests_waiting",
            "vllm:kv_cache_usage_perc", "vllm:request_queue_time_seconds")


def test_no_invented_vllm_series_and_no_model_name_label() -> None:
    text = " ".join(_all_exprs(_spec()))
    assert "model_name" not in text
    assert not [name for name in INVENTED if name in text]
    assert not [name for name in INVENTED if is_exported(name)]  # not even allowed


def _rule(name: str) -> str:
    exprs = {r["record"]: r["expr"] for r in rules.recording_groups(_spec())[1]["rules"]}
    return str(exprs[name])


def test_instream_failures_are_handed_over_minus_finished() -> None:
    assert _rule(rules.INSTREAM_5M) == (
        f"clamp_min({rules.SUCCESS_5M} - on(model) {rules.FINISHED_5M}, 0)")
    assert _rule(rules.FINISHED_5M) == (
        "sum by (model) (rate(vllm:e2e_request_latency_seconds_count[5m]))")
    assert rules.INSTREAM_5M in _rule(rules.ERRORS_5M)


def test_error_ratio_counts_instream_failures_once() -> None:
    """Triton's successes include the in-stream failures: the denominator must not add them."""
    ratio = _rule(rules.ERROR_RATIO_5M)
    numerator, denominator = ratio.split(" / ", 1)
    assert numerator == rules.ERRORS_5M
    assert rules.INSTREAM_5M not in denominator and rules.SUCCESS_5M in denominator


def test_unhealthy_replicas_leave_out_draining_and_degraded_members() -> None:
    expr = _rule(rules.UNHEALTHY)
    assert expr.startswith("max by (model) (")
    for kind in ("total", "healthy", "degraded", "excluded"):
        assert f"envoy_cluster_membership_{kind}{{" in expr


def test_alerts_carry_severity_and_templated_annotations() -> None:
    for rule in alert_groups()[0]["rules"]:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        label = "type" if rule["alert"] == "CaravanXdsNack" else "model"
        assert "{{ $labels.%s }}" % label in rule["annotations"]["summary"], rule["alert"]  # noqa: UP031


@pytest.mark.parametrize("alert", ALERTS, ids=[a.name for a in ALERTS])
def test_every_alert_has_firing_and_quiet_cases(alert: rules.Alert) -> None:
    doc = alert_test_files(_spec(replicas={"min": 0, "max": 2}))[f"{alert.name}.yml"]
    checks = [t for case in doc["tests"] for t in case["alert_rule_test"]]
    assert {c["alertname"] for c in checks} == {alert.name}
    assert any(c["exp_alerts"] for c in checks), "no case where it fires"
    assert any(not c["exp_alerts"] for c in checks), "no case where it stays quiet"


def test_expected_annotations_match_rendered_templates() -> None:
    alert = ALERTS[0]
    exp = alert.expected(model="m1")
    assert exp["exp_labels"] == {"model": "m1", "severity": alert.severity}
    assert exp["exp_annotations"]["summary"] == alert.rule()["annotations"]["summary"].replace(
        "{{ $labels.model }}", "m1")
