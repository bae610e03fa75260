"""Caravan's policy -> the stock Nomad Autoscaler's ``policy {}`` (caravan.nomad.autoscaler_policy)."""

from __future__ import annotations

from typing import Any

import pytest

from caravan.nomad.autoscaler_policy import autoscaler_policy
from caravan.spec import EngineArgs, ModelSpec


def _model(**autoscaling: Any) -> ModelSpec:
    return ModelSpec(name="m", engine=EngineArgs(model="x"), replicas={"min": 1, "max": 6},
                     autoscaling=autoscaling)


def _check(strategy: str, params: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {"name": "c", "query": 'q{model="{model}"}', "query_window_s": 45,
            "strategy": {"name": strategy, "params": params}, **over}


@pytest.mark.parametrize(
    ("strategy", "params"),
    [("target-value", {"target": 5, "threshold": 0.2, "max_scale_up": 2}),
     ("threshold", {"upper_bound": 3, "delta": -1, "within_bounds_trigger": 5}),
     ("fixed-value", {"value": 2}), ("pass-through", {})],
    ids=["target-value", "threshold", "fixed-value", "pass-through"],
)
def test_nomad_autoscaler_strategies_pass_through(strategy: str, params: dict[str, Any]) -> None:
    p = autoscaler_policy(_model(checks=[_check(strategy, params, on_error="ignore")]))
    assert p is not None
    (c,) = p.checks
    assert (c.name, c.strategy, dict(c.params), c.query, c.query_window_s, c.on_error) == (
        "c", strategy, params, 'q{model="m"}', 45, "ignore")


def test_latency_slo_becomes_two_threshold_tiers() -> None:
    params = {"slo_s": 2.0, "down_ratio": 0.25, "step_up": 2, "step_down": 1}
    p = autoscaler_policy(_model(checks=[_check("latency-slo", params)]))
    assert p is not None
    up, down = p.checks
    assert (up.name, up.group, dict(up.params)) == (
        "c-up", "c", {"lower_bound": 2.0, "delta": 2, "within_bounds_trigger": 1})
    assert (down.name, down.group, dict(down.params)) == (
        "c-down", "c", {"upper_bound": 0.5, "delta": -1, "within_bounds_trigger": 45})


@pytest.mark.parametrize(("mode", "rendered"), [("block_down", "fail"), ("fail", "fail"),
                                                ("ignore", "ignore")])
def test_on_check_error(mode: str, rendered: str) -> None:
    p = autoscaler_policy(_model(on_check_error=mode, cooldown_down_s=90))
    assert p is not None and p.on_check_error == rendered
    assert (p.cooldown_s, p.cooldown_on_scale_up_s, p.evaluation_interval_s) == (90, 90, 10)


def test_no_or_disabled_section_renders_no_policy() -> None:
    assert autoscaler_policy(ModelSpec(name="m", engine=EngineArgs(model="x"))) is None
    assert autoscaler_policy(_model(enabled=False)) is None
