"""Strategies replicate the Nomad Autoscaler's math (plugins/builtin/strategy/*/plugin_test.go
cases) and define the LLM-native ones; ``combine`` follows its conflict rules."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from caravan.autoscaler.strategies import Vote, combine, run_strategy
from caravan.spec.base import format_errors
from caravan.spec.strategy_params import parse_strategy


def _strategy_errors(data: dict[str, Any]) -> list[str]:
    """``path: message`` lines for a bad strategy (empty when it is valid)."""
    try:
        parse_strategy(data)
    except ValidationError as exc:
        return format_errors(exc, data)
    return []


# (strategy, params, window, count, expected desired or None)
CASES: list[tuple[str, str, dict[str, Any], list[float], int, int | None]] = [
    # target-value: cases from the upstream plugin tests
    ("tv-factor-1", "target-value", {"target": 13}, [13], 2, None),
    ("tv-factor-2", "target-value", {"target": 13}, [26], 2, 4),
    ("tv-from-zero", "target-value", {"target": 10}, [20], 0, 2),
    ("tv-small-diff", "target-value", {"target": 10}, [9.95], 1, None),
    ("tv-zero-target-from-zero", "target-value", {"target": 0}, [1], 0, 1),
    ("tv-zero-target-to-zero", "target-value", {"target": 0}, [0], 5, 0),
    ("tv-tiny-change-ignored", "target-value", {"target": 5}, [5.00001], 8, None),
    ("tv-tiny-threshold", "target-value", {"target": 5, "threshold": 0.000001}, [5.00001], 8, 9),
    ("tv-docs-memory-example", "target-value", {"target": 70}, [80], 10, 12),
    ("tv-down", "target-value", {"target": 10}, [5], 4, 2),
    ("tv-zero-metric-at-zero", "target-value", {"target": 10}, [0], 0, None),
    ("tv-max-scale-up", "target-value", {"target": 10, "max_scale_up": 2}, [100], 2, 4),
    ("tv-max-scale-down", "target-value", {"target": 10, "max_scale_down": 1}, [1], 8, 7),
    ("tv-uses-latest", "target-value", {"target": 10}, [100, 20], 1, 2),
    # threshold: upstream semantics (bounds [lower, upper), within_bounds_trigger)
    (
        "th-delta-up",
        "threshold",
        {"lower_bound": 70, "upper_bound": 100, "delta": 1, "within_bounds_trigger": 1},
        [80],
        3,
        4,
    ),
    (
        "th-delta-down",
        "threshold",
        {"upper_bound": 30, "delta": -1, "within_bounds_trigger": 2},
        [10, 20],
        3,
        2,
    ),
    (
        "th-not-enough-in-bounds",
        "threshold",
        {"lower_bound": 70, "delta": 1},
        [80, 80, 80, 80, 10],
        3,
        None,
    ),
    ("th-default-trigger-5", "threshold", {"lower_bound": 70, "delta": 1}, [80] * 5, 3, 4),
    (
        "th-upper-exclusive",
        "threshold",
        {"lower_bound": 0, "upper_bound": 10, "delta": 1, "within_bounds_trigger": 1},
        [10],
        3,
        None,
    ),
    (
        "th-percentage",
        "threshold",
        {"lower_bound": 0, "percentage": 50, "within_bounds_trigger": 1},
        [1],
        3,
        5,
    ),
    (
        "th-percentage-down",
        "threshold",
        {"upper_bound": 5, "percentage": -50, "within_bounds_trigger": 1},
        [1],
        3,
        2,
    ),
    (
        "th-value",
        "threshold",
        {"lower_bound": 0, "value": 7, "within_bounds_trigger": 1},
        [1],
        3,
        7,
    ),
    (
        "th-value-same",
        "threshold",
        {"lower_bound": 0, "value": 3, "within_bounds_trigger": 1},
        [1],
        3,
        None,
    ),
    (
        "th-delta-not-below-zero",
        "threshold",
        {"upper_bound": 5, "delta": -5, "within_bounds_trigger": 1},
        [1],
        2,
        0,
    ),
    # fixed-value / pass-through
    ("fv-set", "fixed-value", {"value": 3}, [0], 1, 3),
    ("fv-same", "fixed-value", {"value": 3}, [0], 3, None),
    ("pt-up", "pass-through", {}, [5.9], 2, 5),
    ("pt-same", "pass-through", {}, [2], 2, None),
    ("pt-down", "pass-through", {}, [1], 4, 1),
    ("pt-max-scale-up", "pass-through", {"max_scale_up": 1}, [9], 2, 3),
    ("pt-max-scale-down", "pass-through", {"max_scale_down": 2}, [0], 9, 7),
    # requests-per-replica (KubeAI style, with a hysteresis band)
    (
        "rpr-burst-latest",
        "requests-per-replica",
        {"target": 10, "burst_samples": 1},
        [0, 0, 0, 45],
        1,
        5,
    ),
    ("rpr-burst-two-samples", "requests-per-replica", {"target": 10}, [0, 0, 40, 50], 1, 5),
    (
        "rpr-one-spike-is-not-a-burst",
        "requests-per-replica",
        {"target": 10},
        [20, 20, 20, 24],
        2,
        None,
    ),
    ("rpr-at-target", "requests-per-replica", {"target": 10}, [20, 20], 2, None),
    ("rpr-within-band", "requests-per-replica", {"target": 10}, [21, 21], 2, None),
    ("rpr-just-above-band", "requests-per-replica", {"target": 10}, [23], 2, 3),
    ("rpr-down-follows-mean", "requests-per-replica", {"target": 10}, [40, 40, 0, 0], 4, 3),
    ("rpr-down-idle", "requests-per-replica", {"target": 10}, [0, 0], 3, 0),
    ("rpr-from-zero", "requests-per-replica", {"target": 8}, [1], 0, 1),
    ("rpr-zero-stays", "requests-per-replica", {"target": 8}, [0], 0, None),
    ("rpr-no-down-inside-band", "requests-per-replica", {"target": 10}, [18.5], 2, None),
    ("rpr-max-scale-up", "requests-per-replica", {"target": 1, "max_scale_up": 2}, [50], 1, 3),
    # latency-slo
    ("slo-over", "latency-slo", {"slo_s": 1.0}, [0.2, 1.5], 2, 3),
    ("slo-over-step", "latency-slo", {"slo_s": 1.0, "step_up": 2}, [1.5], 2, 4),
    ("slo-comfortable", "latency-slo", {"slo_s": 1.0}, [0.3, 0.4], 2, 1),
    ("slo-one-sample-not-comfortable", "latency-slo", {"slo_s": 1.0}, [0.6, 0.3], 2, None),
    ("slo-between", "latency-slo", {"slo_s": 1.0, "down_ratio": 0.8}, [0.9], 2, None),
    ("slo-zero-count-no-down", "latency-slo", {"slo_s": 1.0}, [0.0], 0, None),
]


@pytest.mark.parametrize(
    ("strategy", "params", "window", "count", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_strategy_math(
    strategy: str, params: dict[str, Any], window: list[float], count: int, expected: int | None
) -> None:
    typed = parse_strategy({"name": strategy, "params": params})
    assert run_strategy(typed, window, count) == expected


PARAM_ERRORS = [
    ("tv-missing-target", "target-value", {}, "params.target: required field is missing"),
    ("tv-negative", "target-value", {"target": -1}, "params.target: must be >= 0"),
    ("rpr-zero", "requests-per-replica", {"target": 0}, "params.target: must be > 0"),
    (
        "rpr-tolerance",
        "requests-per-replica",
        {"target": 1, "tolerance": 1},
        "params.tolerance: must be < 1",
    ),
    (
        "th-no-bounds",
        "threshold",
        {"delta": 1},
        "params.upper_bound: give upper_bound, lower_bound or both",
    ),
    (
        "th-two-actions",
        "threshold",
        {"lower_bound": 1, "delta": 1, "value": 2},
        "params.delta: give exactly one",
    ),
    ("th-negative-value", "threshold", {"lower_bound": 1, "value": -2}, "params.value: must be >= 0"),
    ("unknown-param", "fixed-value", {"value": 1, "valu": 2}, "params.valu: unknown field"),
    ("slo-ratio", "latency-slo", {"slo_s": 1, "down_ratio": 1.5}, "params.down_ratio: must be < 1"),
    ("unknown-strategy", "magic", {}, "name: unknown 'magic'; expected one of"),
]


@pytest.mark.parametrize(
    ("strategy", "params", "needle"),
    [c[1:] for c in PARAM_ERRORS],
    ids=[c[0] for c in PARAM_ERRORS],
)
def test_bad_params_name_the_field(strategy: str, params: dict[str, Any], needle: str) -> None:
    errors = _strategy_errors({"name": strategy, "params": params})
    assert any(e.startswith(needle) for e in errors), errors


def test_a_missing_strategy_name_is_named() -> None:
    assert _strategy_errors({"params": {"target": 1}}) == ["name: required field is missing"]


def test_params_may_be_left_out_when_none_is_required() -> None:
    assert _strategy_errors({"name": "pass-through"}) == []
    assert _strategy_errors({"name": "target-value"}) == ["params.target: required field is missing"]


def _v(
    name: str,
    desired: int | None,
    error: str | None = None,
    on_error: str = "block_down",
    group: str | None = None,
) -> Vote:
    return Vote(
        check=name,
        desired=desired,
        value=1.0,
        error=error,
        on_error=on_error,  # type: ignore[arg-type]
        group=group,
    )


COMBINE = [
    ("up-beats-down", [_v("a", 5), _v("b", 1)], 3, (1, 10), 5, "up"),
    ("up-beats-none", [_v("a", None), _v("b", 4)], 3, (1, 10), 4, "up"),
    ("none-beats-down", [_v("a", None), _v("b", 1)], 3, (1, 10), 3, "none"),
    ("larger-up-wins", [_v("a", 5), _v("b", 7)], 3, (1, 10), 7, "up"),
    ("larger-down-wins", [_v("a", 1), _v("b", 2)], 3, (1, 10), 2, "down"),
    ("block-down-blocks-down", [_v("a", 1), _v("b", None, "boom")], 3, (1, 10), 3, "none"),
    ("block-down-does-not-block-up", [_v("a", 5), _v("b", None, "boom")], 3, (1, 10), 5, "up"),
    ("fail-aborts-down", [_v("a", 1), _v("b", None, "boom", "fail")], 3, (1, 10), 3, "none"),
    ("fail-aborts-up", [_v("a", 5), _v("b", None, "boom", "fail")], 3, (1, 10), 3, "none"),
    ("fail-aborts-even-a-clamp", [_v("b", None, "boom", "fail")], 12, (1, 10), 12, "none"),
    (
        "ignore-does-not-block-down",
        [_v("a", 1), _v("b", None, "boom", "ignore")],
        3,
        (1, 10),
        1,
        "down",
    ),
    ("clamp-max", [_v("a", 50)], 3, (1, 10), 10, "up"),
    ("clamp-min", [_v("a", 0)], 3, (1, 10), 1, "down"),
    ("below-min-brought-up", [_v("a", None)], 0, (1, 10), 1, "up"),
    ("above-max-brought-down", [_v("a", None)], 12, (1, 10), 10, "down"),
    ("all-failed-holds", [_v("a", None, "x"), _v("b", None, "y", "ignore")], 3, (1, 10), 3, "none"),
    (
        "group-tiers-down",
        [_v("hi", None, group="mem"), _v("lo", 2, group="mem")],
        3,
        (1, 10),
        2,
        "down",
    ),
    (
        "group-plus-independent-none",
        [_v("lo", 2, group="mem"), _v("c", None)],
        3,
        (1, 10),
        3,
        "none",
    ),
]


@pytest.mark.parametrize(
    ("votes", "count", "bounds", "desired", "direction"),
    [c[1:] for c in COMBINE],
    ids=[c[0] for c in COMBINE],
)
def test_combine(
    votes: list[Vote], count: int, bounds: tuple[int, int], desired: int, direction: str
) -> None:
    p = combine(votes, count, *bounds)
    assert (p.desired, p.direction) == (desired, direction), p.reason


def test_combine_reason_names_the_failed_check() -> None:
    p = combine([_v("a", 1), _v("latency", None, "query 'x' returned nan")], 3, 1, 10)
    assert "latency" in p.reason and "blocked" in p.reason
    p = combine([_v("a", 5), _v("latency", None, "nan", "fail")], 3, 1, 10)
    assert p.reason == "check 'latency' failed (nan); evaluation aborted (on_error fail)"


# (id, strategy, params, steps from the current count)
STEPPING = [
    ("target-value", "target-value", {"target": 10}, True),
    ("threshold-delta", "threshold", {"upper_bound": 5, "delta": 1}, True),
    ("threshold-percentage", "threshold", {"upper_bound": 5, "percentage": 50}, True),
    ("threshold-value", "threshold", {"upper_bound": 5, "value": 4}, False),
    ("latency-slo", "latency-slo", {"slo_s": 1}, True),
    ("requests-per-replica", "requests-per-replica", {"target": 4}, False),
    ("fixed-value", "fixed-value", {"value": 2}, False),
    ("pass-through", "pass-through", {}, False),
]


@pytest.mark.parametrize(
    ("name", "params", "steps"), [c[1:] for c in STEPPING], ids=[c[0] for c in STEPPING]
)
def test_which_strategies_step_from_the_count(name: str, params: dict[str, Any], steps: bool) -> None:
    assert parse_strategy({"name": name, "params": params}).steps_from_count is steps


# (id, votes, count, bounds, winning check)
WINNERS: list[tuple[str, list[Vote], int, tuple[int, int], str | None]] = [
    ("largest-up", [_v("a", 4), _v("b", 6)], 3, (1, 10), "b"),
    ("up-clamped-to-max-keeps-winner", [_v("a", 20)], 3, (1, 10), "a"),
    ("down", [_v("a", 1), _v("b", 2)], 3, (1, 10), "b"),
    ("none", [_v("a", None)], 3, (1, 10), None),
    ("up-from-min-clamp-not-a-check", [_v("a", 0)], 0, (1, 10), None),
    ("down-clamped-to-min-keeps-winner", [_v("a", 0)], 3, (1, 10), "a"),
]


@pytest.mark.parametrize(
    ("votes", "count", "bounds", "winner"), [c[1:] for c in WINNERS], ids=[c[0] for c in WINNERS]
)
def test_proposal_names_the_winning_check(
    votes: list[Vote], count: int, bounds: tuple[int, int], winner: str | None
) -> None:
    assert combine(votes, count, *bounds).check == winner
