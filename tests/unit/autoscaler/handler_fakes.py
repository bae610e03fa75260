"""In-memory ports for ``PolicyHandler`` tests: a fake clock, a PromQL answerer and a
scale target, and builders of a policy and a handler over them (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from caravan.autoscaler.handler import PolicyHandler
from caravan.autoscaler.ports import MetricsError, Shortfall, TargetStatus
from caravan.spec import EngineArgs, ModelSpec
from caravan.spec.autoscaling import ScalingPolicy, policy_for


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Metrics:
    """Answers by substring of the query; an Exception value is raised. A range query
    answers the current value at every step (a signal that has held for the window)."""

    answers: dict[str, float | Exception] = field(default_factory=dict)
    ranges: list[tuple[str, float, float, float]] = field(default_factory=list)

    def query(self, promql: str) -> float:
        for key, value in self.answers.items():
            if key in promql:
                if isinstance(value, Exception):
                    raise value
                return value
        raise MetricsError(f"query {promql!r}: expected exactly one series, got no series")

    def query_range(self, promql: str, start: float, end: float,
                    step_s: float) -> list[tuple[float, float]]:
        self.ranges.append((promql, start, end, step_s))
        value = self.query(promql)
        n = round((end - start) / step_s) + 1
        return [(start + i * step_s, value) for i in range(n)]


@dataclass
class Target:
    running: int = 1
    starting: int = 0
    ready: bool = True
    refuse: Exception | None = None
    shortfall: Shortfall | None = None
    desired: int | None = None
    calls: list[tuple[int, str, Mapping[str, str]]] = field(default_factory=list)
    released: list[str] = field(default_factory=list)

    last_scaled_at: float | None = None

    def status(self, model: str) -> TargetStatus:
        n = self.running + self.starting
        desired = n if self.desired is None else self.desired
        return TargetStatus(self.running, self.starting, desired, ready=self.ready,
                            shortfall=self.shortfall, last_scaled_at=self.last_scaled_at)

    def release(self, model: str, reason: str) -> None:
        self.released.append(reason)
        self.shortfall, self.ready, self.desired = None, True, None

    def scale(self, model: str, count: int, reason: str, meta: Mapping[str, str]) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.calls.append((count, reason, meta))
        self.running, self.starting = count, 0


def make_policy(**over: Any) -> ScalingPolicy:
    raw: dict[str, Any] = {
        "min": 1,
        "max": 5,
        "cooldown_up_s": 30,
        "cooldown_down_s": 60,
        "scale_down_stabilization_s": 100,
        "checks": [
            {
                "name": "load",
                "query": 'load{model="{model}"}',
                "query_window_s": 1,
                "strategy": {"name": "requests-per-replica", "params": {"target": 10}},
            }
        ],
    }
    raw.update(over)
    m = ModelSpec(
        name="m", engine=EngineArgs(model="x"), replicas={"min": 1, "max": 5}, autoscaling=raw
    )
    p = policy_for(m)
    assert p is not None
    return p


def make_handler(
    policy: ScalingPolicy | None = None, load: float = 0.0, **target: Any
) -> tuple[PolicyHandler, Metrics, Target, Clock]:
    metrics, tgt, clock = Metrics({"load": load}), Target(**target), Clock()
    return PolicyHandler(policy or make_policy(), metrics, tgt, clock), metrics, tgt, clock


def check_of(strategy: str, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "sig",
        "query": 'load{model="{model}"}',
        "query_window_s": 1,
        "strategy": {"name": strategy, "params": params},
    }


RPR = ("requests-per-replica", {"target": 10})
