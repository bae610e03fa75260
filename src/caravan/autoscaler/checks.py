"""Running a policy's checks: query -> sample window -> strategy -> vote.

Each check keeps a window of (time s, value) samples covering ``query_window_s``,
one sample per evaluation. Windows are immutable tuples returned anew each round,
so a handler's state never aliases another's. Only ``run_checks`` does I/O (through
the injected ``MetricsSource``); everything else is pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from caravan.autoscaler.policy import Check, ScalingPolicy
from caravan.autoscaler.ports import MetricsError, MetricsSource
from caravan.autoscaler.strategies import Vote, run_strategy

Window = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class CheckResult:
    """One check in one round: the rendered query, its vote, and how many samples it saw."""

    query: str
    vote: Vote
    samples: int


def push(window: Window, t: float, value: float, keep_s: float) -> Window:
    """``window`` plus (t, value), without samples older than ``t - keep_s``."""
    return (*(s for s in window if s[0] > t - keep_s), (t, value))


def vote(policy: ScalingPolicy, check: Check, window: Window, count: int) -> Vote:
    """The check's vote on ``window`` (oldest first) at replica ``count``. Pure."""
    if not window:
        return _vote(policy, check, error="no samples")
    values = [v for _, v in window]
    try:
        desired = run_strategy(check.strategy.name, values, count, check.strategy.params)
    except ValueError as exc:
        return _vote(policy, check, value=values[-1], error=str(exc))
    return _vote(policy, check, value=values[-1], desired=desired)


def _vote(
    policy: ScalingPolicy,
    check: Check,
    *,
    value: float | None = None,
    desired: int | None = None,
    error: str | None = None,
) -> Vote:
    return Vote(
        check=check.name,
        desired=desired,
        value=value,
        error=error,
        on_error=policy.on_error(check),
        group=check.group,
    )


def measure(metrics: MetricsSource, query: str) -> tuple[float | None, str | None]:
    """(value, None) or (None, error text). NaN/Inf are errors, never zero."""
    try:
        value = metrics.query(query)
    except MetricsError as exc:
        return None, str(exc)
    if math.isnan(value) or math.isinf(value):
        return None, f"query {query!r} returned {value}"
    return value, None


def run_checks(
    metrics: MetricsSource,
    policy: ScalingPolicy,
    windows: Mapping[str, Window],
    count: int,
    now: float,
) -> tuple[tuple[CheckResult, ...], dict[str, Window]]:
    """Query every check once at time ``now`` (s) and vote. Returns results and new windows.

    A failed query leaves the check's window as it was and yields an error vote.
    """
    results: list[CheckResult] = []
    new_windows: dict[str, Window] = {}
    for check in policy.checks:
        query = policy.render(check)
        window = windows.get(check.name, ())
        value, error = measure(metrics, query)
        if error is not None:
            new_windows[check.name] = window
            v = _vote(policy, check, error=error)
        else:
            window = push(window, now, float(value or 0.0), check.query_window_s)
            new_windows[check.name] = window
            v = vote(policy, check, window, count)
        results.append(CheckResult(query=query, vote=v, samples=len(window)))
    return tuple(results), new_windows
