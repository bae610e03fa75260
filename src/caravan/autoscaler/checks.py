"""Running a policy's checks: range query -> window -> strategy -> vote.

Each evaluation queries every check as a range over its ``query_window_s`` at
``query_step_s`` (1 s by default), as nomad-autoscaler's Prometheus APM plugin does, so
a strategy sees the same points it would there (a ``threshold`` check with
``within_bounds_trigger`` 5 and a 30 s window sees ~30 points, not one per evaluation).
The window of (time s, value) points is an immutable tuple returned anew each round
(the last good one is kept when a query fails), so a handler's state never aliases
another's. Only ``run_checks`` does I/O (through the injected ``MetricsSource``);
everything else is pure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from caravan.autoscaler.ports import MetricsError, MetricsSource
from caravan.autoscaler.strategies import Vote, run_strategy
from caravan.spec.autoscaling import ScalingCheck, ScalingPolicy

Window = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class CheckResult:
    """One check in one round: the rendered query, its vote, and how many samples it saw."""

    query: str
    vote: Vote
    samples: int


def vote(policy: ScalingPolicy, check: ScalingCheck, window: Window, count: int) -> Vote:
    """The check's vote on ``window`` (oldest first) at replica ``count``. Pure."""
    if not window:
        return _vote(policy, check, error="no samples")
    values = [v for _, v in window]
    try:
        desired = run_strategy(check.strategy, values, count)
    except ValueError as exc:
        return _vote(policy, check, value=values[-1], error=str(exc))
    return _vote(policy, check, value=values[-1], desired=desired)


def _vote(
    policy: ScalingPolicy,
    check: ScalingCheck,
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


def measure(metrics: MetricsSource, query: str, now: float,
            check: ScalingCheck) -> tuple[Window, str | None]:
    """The check's window of points ending at ``now``, or ((), error text)."""
    try:
        points = metrics.query_range(query, now - check.query_window_s, now, check.query_step_s)
    except MetricsError as exc:
        return (), str(exc)
    finite = tuple((t, v) for t, v in points if math.isfinite(v))
    if not finite:
        return (), f"query {query!r} returned no finite value in the window"
    return finite, None


def run_checks(
    metrics: MetricsSource,
    policy: ScalingPolicy,
    windows: Mapping[str, Window],
    count: int,
    now: float,
) -> tuple[tuple[CheckResult, ...], dict[str, Window]]:
    """Query every check's window ending at ``now`` (s) and vote. Returns results and the
    windows (a failed query keeps the check's previous window and yields an error vote).
    """
    results: list[CheckResult] = []
    new_windows: dict[str, Window] = {}
    for check in policy.checks:
        query = policy.render(check)
        window, error = measure(metrics, query, now, check)
        if error is not None:
            new_windows[check.name] = windows.get(check.name, ())
            v = _vote(policy, check, error=error)
        else:
            new_windows[check.name] = window
            v = vote(policy, check, window, count)
        results.append(CheckResult(query=query, vote=v, samples=len(window)))
    return tuple(results), new_windows
