"""The typed ``autoscaling:`` section (caravan.spec.autoscaling): defaults from the model,
every error at once with its full path, strategies as a discriminated union."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from caravan.spec import EngineArgs, ModelSpec, SpecError, load_spec, parse_spec
from caravan.spec.autoscaling import SIGNALS, AutoscalingSpec, policy_for

ROOT = Path(__file__).resolve().parents[2]


def _errors(autoscaling: Any) -> list[str]:
    """Every error of a one-model spec whose model has this ``autoscaling`` section."""
    data = {"models": [{"name": "llama", "engine": {"model": "x"},
                        "replicas": {"min": 1, "max": 4}, "autoscaling": autoscaling}]}
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return info.value.errors


def _model(autoscaling: dict[str, Any] | None = None) -> ModelSpec:
    return ModelSpec(
        name="llama",
        engine=EngineArgs(model="x"),
        replicas={"min": 1, "max": 4},
        autoscaling=autoscaling,
    )


def _check(**over: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": "c",
        "signal": "envoy_in_flight",
        "strategy": {"name": "requests-per-replica", "params": {"target": 8}},
    }
    c.update(over)
    return c


ERRORS = [
    (
        "target-not-positive",
        {"checks": [_check(strategy={"name": "requests-per-replica", "params": {"target": 0}})]},
        "checks[0].strategy.params.target: must be > 0",
    ),
    (
        "unknown-strategy",
        {"checks": [_check(strategy={"name": "magic"})]},
        "checks[0].strategy.name: unknown 'magic'; expected one of",
    ),
    (
        "unknown-signal",
        {"checks": [_check(signal="gpu")]},
        "checks[0].signal: unknown signal 'gpu'",
    ),
    ("query-and-signal", {"checks": [_check(query="up")]}, "checks[0].query: give exactly one"),
    (
        "bad-placeholder",
        {"checks": [_check(signal=None, query='x{model="{modle}"}')]},
        "checks[0].query: unknown placeholder {modle}",
    ),
    ("max-below-min", {"min": 3, "max": 2}, "max: must be >= min (3)"),
    ("negative-cooldown", {"cooldown_up_s": -5}, "cooldown_up_s: must be >= 0"),
    ("zero-interval", {"evaluation_interval_s": 0}, "evaluation_interval_s: must be > 0"),
    ("bad-on-error", {"on_check_error": "explode"}, "on_check_error: must be one of"),
    ("unknown-field", {"cooldown": 5}, "cooldown: unknown field"),
    (
        "duplicate-check",
        {"checks": [_check(), _check()]},
        "checks[1].name: duplicate check name 'c'",
    ),
    ("empty-checks", {"checks": []}, "checks: must have at least 1"),
    ("model-is-derived", {"model": "other"}, "model: unknown field"),
    ("no-strategy-name", {"checks": [_check(strategy={"params": {}})]},
     "checks[0].strategy.name: required field is missing"),
    ("missing-param", {"checks": [_check(strategy={"name": "latency-slo"})]},
     "checks[0].strategy.params.slo_s: required field is missing"),
    ("max-below-replicas-min", {"max": 0}, "max: must be >= min (1), got 0"),
]


@pytest.mark.parametrize(("raw", "needle"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_name_the_path(raw: dict[str, Any], needle: str) -> None:
    errors = _errors(raw)
    assert any(e.startswith("models[0].autoscaling." + needle) for e in errors), errors


def test_every_error_is_reported_at_once() -> None:
    raw = {
        "min": 3,
        "max": 2,
        "cooldown_down_s": -1,
        "checks": [
            _check(strategy={"name": "target-value", "params": {"target": -1}}),
            _check(name="d", signal="nope"),
        ],
    }
    errors = _errors(raw)
    assert sorted(errors) == [
        "models[0].autoscaling.checks[0].strategy.params.target: must be >= 0.0 (got -1)",
        "models[0].autoscaling.checks[1].signal: unknown signal 'nope'; expected one of "
        f"{sorted(SIGNALS)}",
        "models[0].autoscaling.cooldown_down_s: must be >= 0.0 (got -1)",
        "models[0].autoscaling.max: must be >= min (3), got 2",
    ]


def test_errors_in_the_section_come_with_the_rest_of_the_spec() -> None:
    data = {"models": [
        {"name": "a", "engine": {"model": "x"}, "replicas": {"max": 0}},
        {"name": "b", "engine": {"model": "x"},
         "autoscaling": {"checks": [_check(), _check()], "evaluation_interval_s": 0}},
    ], "envoy": {"admin_port": 18000}}
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert info.value.errors == [
        "models[0].replicas.max: must be >= 1 (got 0)",
        "models[1].autoscaling.evaluation_interval_s: must be > 0.0 (got 0)",
        "control_plane.xds_port: port 18000 is already used by envoy.admin_port",
        "models[1].autoscaling.checks[1].name: duplicate check name 'c'",
    ]


def test_the_section_is_typed() -> None:
    m = _model({"cooldown_down_s": 60, "checks": [_check()]})
    assert isinstance(m.autoscaling, AutoscalingSpec)
    assert m.autoscaling.checks[0].strategy.params.target == 8.0  # type: ignore[union-attr]
    p = policy_for(m)
    assert p is not None and (p.cooldown_up_s, p.cooldown_down_s) == (60.0, 60.0)


def test_defaults_come_from_the_model() -> None:
    p = policy_for(_model({}))
    assert p is not None
    assert (p.min, p.max, p.evaluation_interval_s, p.job, p.group) == (
        1,
        4,
        10.0,
        "triton-llama",
        "triton",
    )
    assert [c.signal for c in p.checks] == ["llm_demand"]
    text = p.render(p.checks[0])
    # arrivals over the check's 60 s window, plus the in-flight fallback (active + pending)
    assert "envoy_cluster_upstream_rq_total" in text and "[60000ms]" in text
    assert text.count('envoy_cluster_name="model-llama"') == 3


def test_no_section_means_no_policy() -> None:
    assert policy_for(_model(None)) is None


@pytest.mark.parametrize("signal", sorted(SIGNALS), ids=sorted(SIGNALS))
def test_builtin_signals_render_without_placeholders(signal: str) -> None:
    p = policy_for(_model({"checks": [_check(signal=signal)]}))
    assert p is not None
    text = p.render(p.checks[0])
    assert "{model}" not in text and "{cluster}" not in text and "llama" in text


def test_query_placeholders_are_filled() -> None:
    q = 'sum(x{m="{model}",j="{job}",g="{group}",c="{cluster}"})'
    p = policy_for(_model({"checks": [_check(signal=None, query=q)]}))
    assert p is not None
    assert p.render(p.checks[0]) == 'sum(x{m="llama",j="triton-llama",g="triton",c="model-llama"})'


def test_spec_loading_reports_policy_errors_with_full_paths() -> None:
    data = {
        "models": [
            {
                "name": "a",
                "engine": {"model": "x"},
                "autoscaling": {
                    "checks": [
                        _check(strategy={"name": "requests-per-replica", "params": {"target": -2}})
                    ]
                },
            }
        ]
    }
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert info.value.errors == [
        "models[0].autoscaling.checks[0].strategy.params.target: must be > 0.0 (got -2)"
    ]


def test_example_platform_spec_has_a_valid_policy() -> None:
    spec = load_spec(ROOT / "examples" / "platform.yaml")
    policies = [policy_for(m) for m in spec.models]
    assert policies[0] is not None and policies[0].checks
    raw = yaml.safe_load((ROOT / "examples" / "platform.yaml").read_text())
    assert "autoscaling" in raw["models"][0]
