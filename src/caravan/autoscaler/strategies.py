"""Scaling strategies: pure functions (samples, current count, params) -> desired count.

Their parameters are typed in the spec (``caravan.spec.strategy_params``), validated
when the spec loads.

Every strategy has the signature ``(window, count, params) -> int | None``:
``window`` holds the check's samples, oldest first, never empty (the latest is
``window[-1]``); ``count`` is the current replica count (capacity: running plus
starting); the result is the desired count, or None for "no action". Results are
not clamped to the policy's [min, max]; ``combine`` does that.

Nomad Autoscaler semantics (hashicorp/nomad-autoscaler plugins/builtin/strategy):

* ``target-value``: factor = value / target (value when target is 0). From count 0,
  scale to ceil(factor) when factor > 0. Otherwise act only outside [1 - threshold,
  1 + threshold], to ceil(count * factor), limited by max_scale_up / max_scale_down.
* ``threshold``: when at least ``within_bounds_trigger`` samples lie in
  [lower_bound, upper_bound), apply one of ``delta``, ``percentage`` (ceil(count *
  (1 + p/100))) or ``value``.
* ``fixed-value``: ``value``. ``pass-through``: int(latest value), with max_scale_*.

LLM-native:

* ``requests-per-replica`` (KubeAI-style): load = max(window mean, mean of the last
  ``burst_samples`` samples) in-flight requests; up to ceil(load / target) when load
  exceeds count * target * (1 + tolerance); down to ceil(load / (target * (1 -
  tolerance))) when that is below count. Bursts act on the recent samples (2 by
  default: one noisy sample is not a burst), decreases follow the window mean, and the
  down target is lower than the up one, so the two never alternate.
* ``latency-slo``: up by ``step_up`` while the latest latency exceeds ``slo_s``;
  down by ``step_down`` once every sample in the window is below slo_s * down_ratio.

Sizing vs stepping: ``requests-per-replica``, ``fixed-value`` and ``pass-through``
compute the count from the signal alone (the count only sets the hysteresis band);
``target-value``, ``threshold`` (delta / percentage) and ``latency-slo`` step from the
current count (``ScalingStrategy.steps_from_count``). A stepping strategy must not step again while
the replicas of its last step are still loading: the signal cannot reflect them yet
(the handler holds such scale-ups, see ``handler.decide``).

Pure and thread-safe.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from caravan.spec.strategy_params import (
    FixedValueParams,
    LatencySloParams,
    PassThroughParams,
    RequestsPerReplicaParams,
    ScalingStrategy,
    TargetValueParams,
    ThresholdParams,
)

Direction = Literal["up", "down", "none"]


def _limit(new: int, count: int,
           p: TargetValueParams | PassThroughParams | RequestsPerReplicaParams) -> int | None:
    """Apply max_scale_up / max_scale_down; None when nothing changes."""
    new = max(new, 0)
    if p.max_scale_up is not None and new > count:
        new = min(new, count + p.max_scale_up)
    if p.max_scale_down is not None and new < count:
        new = max(new, count - p.max_scale_down)
    return None if new == count else new


def target_value(window: Sequence[float], count: int, p: TargetValueParams) -> int | None:
    value = window[-1]
    factor = value if p.target == 0 else value / p.target
    if count == 0:
        return _limit(math.ceil(factor), 0, p) if factor > 0 else None
    if 1 - p.threshold <= factor <= 1 + p.threshold:
        return None
    return _limit(math.ceil(count * factor), count, p)


def threshold(window: Sequence[float], count: int, p: ThresholdParams) -> int | None:
    lower = -math.inf if p.lower_bound is None else p.lower_bound
    upper = math.inf if p.upper_bound is None else p.upper_bound
    within = sum(1 for v in window if lower <= v < upper)
    if within < p.within_bounds_trigger:
        return None
    if p.delta is not None:
        new = count + p.delta
    elif p.percentage is not None:
        new = math.ceil(count * (1 + p.percentage / 100))
    else:
        new = int(p.value or 0)
    new = max(new, 0)
    return None if new == count else new


def fixed_value(window: Sequence[float], count: int, p: FixedValueParams) -> int | None:
    return None if p.value == count else p.value


def pass_through(window: Sequence[float], count: int, p: PassThroughParams) -> int | None:
    return _limit(int(window[-1]), count, p)


def requests_per_replica(
    window: Sequence[float], count: int, p: RequestsPerReplicaParams
) -> int | None:
    recent = window[-p.burst_samples :]
    load = max(sum(window) / len(window), sum(recent) / len(recent), 0.0)
    if count == 0:
        return _limit(math.ceil(load / p.target), 0, p) if load > 0 else None
    if load > count * p.target * (1 + p.tolerance):
        return _limit(math.ceil(load / p.target), count, p)
    down = math.ceil(load / (p.target * (1 - p.tolerance)))
    return _limit(down, count, p) if down < count else None


def latency_slo(window: Sequence[float], count: int, p: LatencySloParams) -> int | None:
    if window[-1] > p.slo_s:
        return count + p.step_up
    if count > 0 and max(window) < p.slo_s * p.down_ratio:
        return max(count - p.step_down, 0)
    return None


StrategyFn = Callable[[Sequence[float], int, Any], "int | None"]

STRATEGIES: dict[str, StrategyFn] = {
    "target-value": target_value,
    "threshold": threshold,
    "fixed-value": fixed_value,
    "pass-through": pass_through,
    "requests-per-replica": requests_per_replica,
    "latency-slo": latency_slo,
}


def run_strategy(strategy: ScalingStrategy, window: Sequence[float], count: int) -> int | None:
    """Run ``strategy`` (typed, validated by the spec) on ``window`` at replica ``count``.
    Raises ValueError on an empty window."""
    if not window:
        raise ValueError(f"{strategy.name}: no samples to evaluate")
    return STRATEGIES[strategy.name](window, count, strategy.params)


@dataclass(frozen=True)
class Vote:
    """One check's outcome. ``desired`` None = no action; ``error`` set = the check failed.

    ``group`` ties checks that act as tiers of one signal (threshold bands): within a
    group only members that want an action count, as in the Nomad Autoscaler.
    """

    check: str
    desired: int | None = None
    value: float | None = None
    error: str | None = None
    on_error: Literal["fail", "ignore", "block_down"] = "block_down"
    group: str | None = None

    def direction(self, count: int) -> Direction:
        if self.error is not None or self.desired is None or self.desired == count:
            return "none"
        return "up" if self.desired > count else "down"


@dataclass(frozen=True)
class Proposal:
    """What the checks want, clamped to [min, max]: ``desired``, why, and the check
    whose vote won (None when no check asked for the change, e.g. a clamp)."""

    desired: int
    direction: Direction
    reason: str
    check: str | None = None


def combine(votes: Sequence[Vote], count: int, lo: int, hi: int) -> Proposal:
    """Merge check votes: up beats none beats down; same direction, the larger count wins.

    A failed check with on_error "fail" aborts the evaluation (no change, as
    nomad-autoscaler's ``on_check_error = "fail"``: ``policy/check.go``
    ``getNewCountFromStrategy``); "block_down" (Caravan) blocks scale-down, not
    scale-up; "ignore" drops it. Otherwise the result is clamped to [lo, hi], so a count
    outside the bounds is brought back even when no check asks for it.
    """
    failed = next((v for v in votes if v.error is not None and v.on_error == "fail"), None)
    if failed is not None:
        return Proposal(count, "none", f"check {failed.check!r} failed ({failed.error}); "
                        "evaluation aborted (on_error fail)")
    live = _collapse_groups([v for v in votes if v.error is None], count)
    blocking = [v for v in votes if v.error is not None and v.on_error == "block_down"]
    ups = [v for v in live if v.direction(count) == "up"]
    nones = [v for v in live if v.direction(count) == "none"]
    downs = [v for v in live if v.direction(count) == "down"]
    winner: str | None = None
    if ups:
        best = max(ups, key=lambda v: int(v.desired or 0))
        desired, reason = int(best.desired or 0), f"check {best.check!r} wants {best.desired}"
        winner = best.check
    elif blocking:
        desired, reason = (
            count,
            f"check {blocking[0].check!r} failed ({blocking[0].error}); scale-down blocked",
        )
    elif nones or not downs:
        desired, reason = (
            count,
            "no check wants a change" if not nones else f"check {nones[0].check!r} holds",
        )
    else:
        best = max(downs, key=lambda v: int(v.desired or 0))
        desired, reason = int(best.desired or 0), f"check {best.check!r} wants {best.desired}"
        winner = best.check
    clamped = min(max(desired, lo), hi)
    if clamped != desired:
        reason += f"; clamped to [{lo}, {hi}]"
    direction: Direction = "up" if clamped > count else "down" if clamped < count else "none"
    same_way = (desired > count) == (clamped > count) and (desired < count) == (clamped < count)
    return Proposal(clamped, direction, reason, winner if same_way else None)


def _collapse_groups(votes: list[Vote], count: int) -> list[Vote]:
    """Within each group keep only the members that want an action (all, if none do)."""
    out = [v for v in votes if v.group is None]
    groups: dict[str, list[Vote]] = {}
    for v in votes:
        if v.group is not None:
            groups.setdefault(v.group, []).append(v)
    for members in groups.values():
        acting = [v for v in members if v.direction(count) != "none"]
        out.extend(acting or members[:1])
    return out
