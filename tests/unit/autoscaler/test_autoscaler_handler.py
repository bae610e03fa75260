"""The per-policy state machine with a fake clock and in-memory ports (no I/O)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from caravan.autoscaler.handler import PolicyHandler, build_autoscaler
from caravan.autoscaler.metrics import AutoscalerMetrics
from caravan.autoscaler.ports import (
    MetricsError,
    NotReadyError,
    ScaleError,
    Shortfall,
    TargetStatus,
)
from caravan.spec import EngineArgs, ModelSpec, parse_spec
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


def _policy(**over: Any) -> ScalingPolicy:
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


def _handler(
    policy: ScalingPolicy | None = None, load: float = 0.0, **target: Any
) -> tuple[PolicyHandler, Metrics, Target, Clock]:
    metrics, tgt, clock = Metrics({"load": load}), Target(**target), Clock()
    return PolicyHandler(policy or _policy(), metrics, tgt, clock), metrics, tgt, clock


def test_scale_up_acts_in_the_first_tick() -> None:
    h, _, tgt, _ = _handler(load=35)
    d = h.tick()
    assert (d.action, d.direction, d.current, d.desired) == ("scaled", "up", 1, 4)
    assert tgt.calls[0][0] == 4 and tgt.calls[0][2]["caravan.direction"] == "up"


def test_cooldown_blocks_the_next_action_until_it_expires() -> None:
    h, m, tgt, clock = _handler(load=35)
    h.tick()
    m.answers["load"] = 48  # wants 5 now
    clock.t += 29
    assert h.tick().action == "cooldown"
    clock.t += 2
    d = h.tick()
    assert (d.action, d.desired) == ("scaled", 5) and [c[0] for c in tgt.calls] == [4, 5]


def test_scale_down_waits_for_the_whole_stabilization_window() -> None:
    h, _m, tgt, clock = _handler(load=0, running=4)
    actions = []
    for _ in range(11):  # 0, 10, ..., 100 s
        actions.append(h.tick().action)
        clock.t += 10
    assert actions[:10] == ["stabilizing"] * 10 and actions[10] == "scaled"
    assert tgt.calls[-1][0] == 1


def test_stabilization_restarts_when_the_decision_breaks() -> None:
    h, m, tgt, clock = _handler(load=0, running=4)
    for _ in range(5):
        h.tick()
        clock.t += 10
    m.answers["load"] = 40  # holds at 4: not "down"
    assert h.tick().action == "none"
    m.answers["load"] = 0
    clock.t += 10
    for _ in range(10):
        assert h.tick().action == "stabilizing"
        clock.t += 10
    assert h.tick().action == "scaled" and not tgt.calls[:-1]


def test_scale_down_goes_to_the_largest_count_asked_in_the_window() -> None:
    h, m, _tgt, clock = _handler(_policy(scale_down_stabilization_s=20), load=25, running=5)
    h.tick()  # wants 3
    clock.t += 10
    m.answers["load"] = 0
    h.tick()  # wants 1
    clock.t += 10
    d = h.tick()
    assert (d.action, d.desired) == ("scaled", 3)


def test_dry_run_decides_without_scaling() -> None:
    h, _, tgt, _ = _handler(_policy(dry_run=True), load=35)
    d = h.tick()
    assert (d.action, d.desired) == ("dry-run", 4) and tgt.calls == []


def test_explain_mode_does_not_scale() -> None:
    h, _, tgt, _ = _handler(load=35)
    d = h.tick(act=False)
    assert (d.action, d.desired) == ("scale", 4) and tgt.calls == []


def test_failing_check_blocks_scale_down() -> None:
    p = _policy(
        scale_down_stabilization_s=0,
        checks=[
            {
                "name": "load",
                "query": "load",
                "strategy": {"name": "requests-per-replica", "params": {"target": 10}},
            },
            {
                "name": "ttft",
                "query": "ttft",
                "strategy": {"name": "latency-slo", "params": {"slo_s": 1}},
            },
        ],
    )
    h, m, tgt, _ = _handler(p, load=0, running=3)
    m.answers["ttft"] = MetricsError("query 'ttft': value is nan")
    d = h.tick()
    assert (d.action, d.desired) == ("none", 3) and "ttft" in d.reason and tgt.calls == []
    assert d.checks[1].vote.error is not None


def test_ignored_failing_check_lets_scale_down_through() -> None:
    p = _policy(
        scale_down_stabilization_s=0,
        on_check_error="ignore",
        checks=[
            {
                "name": "load",
                "query": "load",
                "strategy": {"name": "requests-per-replica", "params": {"target": 10}},
            },
            {
                "name": "ttft",
                "query": "ttft",
                "strategy": {"name": "latency-slo", "params": {"slo_s": 1}},
            },
        ],
    )
    h, m, tgt, _ = _handler(p, load=0, running=3)
    m.answers["ttft"] = MetricsError("boom")
    assert h.tick().action == "scaled" and tgt.calls[0][0] == 1


def test_nan_is_a_check_error_not_zero() -> None:
    h, _m, tgt, _ = _handler(_policy(scale_down_stabilization_s=0), load=math.nan, running=3)
    d = h.tick()
    assert d.action == "none" and d.checks[0].vote.error and tgt.calls == []


def test_not_ready_target_skips_the_round() -> None:
    h, _, tgt, _ = _handler(load=35, ready=False)
    d = h.tick()
    assert d.action == "not-ready" and tgt.calls == []


def test_deployment_refusal_at_scale_time_is_not_ready_without_cooldown() -> None:
    h, _, tgt, clock = _handler(
        load=35, refuse=NotReadyError("job scaling blocked due to active deployment")
    )
    assert h.tick().action == "not-ready"
    tgt.refuse = None
    clock.t += 10
    assert h.tick().action == "scaled"


def test_scale_failure_is_an_error_decision() -> None:
    h, _, _, _ = _handler(load=35, refuse=ScaleError("permission denied"))
    d = h.tick()
    assert d.action == "error" and "permission denied" in d.reason


def test_starting_replicas_count_as_capacity() -> None:
    h, _, tgt, _ = _handler(load=35, running=1, starting=3)
    d = h.tick()
    assert (d.current, d.action) == (4, "none") and tgt.calls == []


def test_policies_share_no_state() -> None:
    a, _, _, _ = _handler(load=35)
    b, _, _, _ = _handler(load=0, running=4)
    a.tick()
    b.tick()
    assert a.state.cooldown_until > 0 and b.state.cooldown_until == float("-inf")
    assert a.state.windows is not b.state.windows


def test_decisions_are_exported() -> None:
    reg = CollectorRegistry()
    metrics, tgt, clock = Metrics({"load": 35.0}), Target(), Clock()
    h = PolicyHandler(_policy(), metrics, tgt, clock, AutoscalerMetrics(reg))
    h.tick()
    h.tick()
    get = reg.get_sample_value
    assert get("caravan_autoscaler_desired_count", {"model": "m"}) == 4
    assert get("caravan_autoscaler_current_count", {"model": "m"}) == 4
    assert get("caravan_autoscaler_check_value", {"model": "m", "check": "load"}) == 35
    assert (
        get(
            "caravan_autoscaler_decisions_total",
            {"model": "m", "direction": "up", "action": "scaled"},
        )
        == 1
    )
    assert (
        get(
            "caravan_autoscaler_decisions_total",
            {"model": "m", "direction": "none", "action": "none"},
        )
        == 1
    )
    last = next(s for s in reg.collect() if s.name == "caravan_autoscaler_last_decision").samples
    assert len(last) == 1 and last[0].labels["action"] == "none"


def test_build_autoscaler_and_run_until_stopped() -> None:
    spec = parse_spec(
        {
            "models": [
                {
                    "name": "a",
                    "engine": {"model": "x"},
                    "replicas": {"min": 1, "max": 3},
                    "autoscaling": {
                        "evaluation_interval_s": 0.05,
                        "checks": [
                            {
                                "name": "load",
                                "query": "load",
                                "strategy": {
                                    "name": "requests-per-replica",
                                    "params": {"target": 10},
                                },
                            }
                        ],
                    },
                },
                {"name": "b", "engine": {"model": "x"}},
            ]
        }
    )
    tgt = Target()
    scaler = build_autoscaler(spec, Metrics({"load": 25.0}), tgt, CollectorRegistry(), Clock())
    assert [h.policy.model for h in scaler.handlers] == ["a"]

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(scaler.run(stop))
        for _ in range(100):  # bounded: up to 5 s
            if tgt.calls:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    assert tgt.calls[0][0] == 3


@pytest.mark.parametrize(
    ("running", "load", "expected"),
    [(0, 0.0, 1), (9, 200.0, 5)],
    ids=["below-min-idle", "above-max-busy"],
)
def test_out_of_bounds_counts_are_brought_within_bounds(
    running: int, load: float, expected: int
) -> None:
    h, _, tgt, _ = _handler(_policy(scale_down_stabilization_s=0), load=load, running=running)
    h.tick()
    assert tgt.calls[0][0] == expected


def _check(strategy: str, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "sig",
        "query": 'load{model="{model}"}',
        "query_window_s": 1,
        "strategy": {"name": strategy, "params": params},
    }


SLO = ("latency-slo", {"slo_s": 1.0})
TV = ("target-value", {"target": 10})
DELTA = ("threshold", {"lower_bound": 10, "delta": 1, "within_bounds_trigger": 1})
RPR = ("requests-per-replica", {"target": 10})

# (id, (strategy, params), hold flag, running, starting, load, action, scale calls)
HOLD: list[tuple[str, tuple[str, dict[str, Any]], bool, int, int, float, str, list[int]]] = [
    ("slo-steps-while-starting-held", SLO, True, 2, 1, 5.0, "starting", []),
    ("slo-steps-when-nothing-starting", SLO, True, 2, 0, 5.0, "scaled", [3]),
    ("slo-hold-disabled", SLO, False, 2, 1, 5.0, "scaled", [4]),
    ("target-value-held", TV, True, 1, 1, 20.0, "starting", []),
    ("threshold-delta-held", DELTA, True, 1, 1, 20.0, "starting", []),
    ("sizing-strategy-not-held", RPR, True, 1, 1, 45.0, "scaled", [5]),
    ("sizing-within-placed-count-waits", RPR, True, 1, 3, 35.0, "none", []),
]


@pytest.mark.parametrize(
    ("strategy", "hold", "running", "starting", "load", "action", "calls"),
    [c[1:] for c in HOLD],
    ids=[c[0] for c in HOLD],
)
def test_stepping_strategies_wait_for_starting_replicas(
    strategy: tuple[str, dict[str, Any]],
    hold: bool,
    running: int,
    starting: int,
    load: float,
    action: str,
    calls: list[int],
) -> None:
    policy = _policy(checks=[_check(*strategy)], hold_steps_while_starting=hold)
    h, _, tgt, _ = _handler(policy, load=load, running=running, starting=starting)
    d = h.tick()
    assert d.action == action, d.reason
    assert [c[0] for c in tgt.calls] == calls
    if action == "starting":
        assert f"{starting} replica(s) still starting" in d.reason


def test_held_step_acts_once_the_starting_replicas_serve() -> None:
    policy = _policy(checks=[_check(*SLO)], cooldown_up_s=0)
    h, _, tgt, clock = _handler(policy, load=5.0, running=2, starting=1)
    assert h.tick().action == "starting"
    tgt.running, tgt.starting = 3, 0  # the model finished loading; latency still high
    clock.t += 10
    d = h.tick()
    assert (d.action, d.current, d.desired) == ("scaled", 3, 4)


def test_default_policy_sizes_from_demand_not_in_flight() -> None:
    """The default check reads the llm_demand signal (arrivals x service time)."""
    m = ModelSpec(name="m", engine=EngineArgs(model="x"), replicas={"min": 1, "max": 8}, autoscaling={})
    policy = policy_for(m)
    assert policy is not None
    metrics, tgt, clock = Metrics({"envoy_cluster_upstream_rq_total": 48.0}), Target(), Clock()
    d = PolicyHandler(policy, metrics, tgt, clock).tick()
    assert (d.action, d.desired, d.checks[0].vote.check) == ("scaled", 3, "demand")


STUCK = Shortfall("placement failed: devices: no devices match request (1 node(s)); 2 of 4 "
                  "placed", placeable=2, releasable=True)


def test_a_releasable_shortfall_is_released_and_scale_ups_are_held_at_what_was_placed() -> None:
    h, _m, tgt, clock = _handler(_policy(capacity_backoff_s=100), load=45, running=2,
                                 ready=False, shortfall=STUCK, desired=4)
    d = h.tick()
    assert d.action == "capacity" and "capacity exhausted" in d.reason and d.capacity_cap == 2
    assert tgt.released == [d.reason]
    for _ in range(9):  # 90 s: inside the backoff the same load keeps asking for 5
        clock.t += 10
        held = h.tick()
        assert (held.action, held.desired, held.capacity_cap) == ("capacity", 2, 2)
        assert "held at 2" in held.reason
    assert tgt.calls == []
    clock.t += 11
    assert h.tick().action == "scaled" and tgt.calls[0][0] == 5


def test_a_shortfall_that_is_not_ours_is_reported_not_released() -> None:
    foreign = Shortfall("placement failed: x; 2 of 4 placed", placeable=2, releasable=False)
    h, _m, tgt, _c = _handler(load=45, running=2, ready=False, shortfall=foreign, desired=4)
    d = h.tick()
    assert d.action == "capacity" and "progress deadline" in d.reason
    assert tgt.released == []


def test_dry_run_never_releases() -> None:
    h, _m, tgt, _c = _handler(_policy(dry_run=True), load=45, running=2, ready=False,
                              shortfall=STUCK, desired=4)
    assert h.tick().action == "capacity" and tgt.released == []


def test_scale_down_is_not_held_by_exhausted_capacity() -> None:
    h, _m, tgt, clock = _handler(_policy(capacity_backoff_s=1000), load=45, running=2,
                                 ready=False, shortfall=STUCK, desired=4)
    h.tick()
    h.metrics.answers["load"] = 0  # type: ignore[attr-defined]
    actions = []
    for _ in range(11):
        clock.t += 10
        actions.append(h.tick().action)
    assert actions[-1] == "scaled" and tgt.calls[-1][0] == 1


def test_a_ready_target_with_unplaced_replicas_is_held_and_not_asked_again() -> None:
    """No deployment (no update block): desired 4 stays in Nomad, 2 placed."""
    plain = Shortfall("placement failed: x; 2 of 4 placed", placeable=2, releasable=False)
    h, _m, tgt, clock = _handler(load=45, running=2, shortfall=plain, desired=4)
    for _ in range(3):
        d = h.tick()
        clock.t += 10
        assert d.action == "capacity" and d.capacity_cap == 2
    assert tgt.calls == [] and tgt.released == []


def test_capacity_gauge_follows_the_hold() -> None:
    registry = CollectorRegistry()
    metrics, tgt, clock = Metrics({"load": 45}), Target(running=2, ready=False, shortfall=STUCK,
                                                         desired=4), Clock()
    h = PolicyHandler(_policy(capacity_backoff_s=50), metrics, tgt, clock,
                      AutoscalerMetrics(registry))
    h.tick()
    labels = {"model": "m"}
    assert registry.get_sample_value("caravan_autoscaler_capacity_exhausted", labels) == 1.0
    clock.t += 60
    h.tick()
    assert registry.get_sample_value("caravan_autoscaler_capacity_exhausted", labels) == 0.0


def test_checks_query_their_window_as_a_range_at_their_step() -> None:
    check = {**_check(*RPR), "query_window_s": 30, "query_step_s": 2}
    h, m, _t, clock = _handler(_policy(checks=[check]), load=5)
    d = h.tick()
    assert m.ranges == [('load{model="m"}', clock.t - 30, clock.t, 2.0)]
    assert d.checks[0].samples == 16


def test_a_threshold_check_sees_its_window_in_one_evaluation() -> None:
    """nomad-autoscaler's example: within_bounds_trigger 5 over a 30 s window fires at the
    first evaluation, since the range holds ~30 points (it never fired with one sample
    per evaluation)."""
    params = {"lower_bound": 10, "delta": 1, "within_bounds_trigger": 5}
    check = {**_check("threshold", params), "query_window_s": 30}
    h, _m, tgt, _c = _handler(_policy(checks=[check]), load=12, running=2)
    assert h.tick().action == "scaled" and tgt.calls[0][0] == 3


def test_on_check_error_fail_aborts_the_evaluation_both_ways() -> None:
    checks = [_check(*RPR), {**_check(*RPR), "name": "broken", "query": "missing"}]
    h, _m, tgt, _c = _handler(_policy(checks=checks, on_check_error="fail"), load=45)
    d = h.tick()
    assert (d.action, d.direction) == ("none", "none") and "evaluation aborted" in d.reason
    assert tgt.calls == []


def test_cooldowns_default_like_nomad_autoscaler() -> None:
    m = ModelSpec(name="m", engine=EngineArgs(model="x"), autoscaling={})
    p = policy_for(m)
    assert p is not None and (p.cooldown_up_s, p.cooldown_down_s) == (300.0, 300.0)
    assert p.on_check_error == "block_down" and p.checks[0].query_step_s == 1.0
    m = ModelSpec(name="m", engine=EngineArgs(model="x"), autoscaling={"cooldown_down_s": 120})
    p = policy_for(m)
    assert p is not None and p.cooldown_up_s == 120.0  # cooldown_on_scale_up = cooldown


def test_a_restarted_autoscaler_resumes_the_cooldown_of_the_last_scaling_event() -> None:
    clock = Clock()
    tgt = Target(running=1, last_scaled_at=clock.t - 10)
    h = PolicyHandler(_policy(), Metrics({"load": 35}), tgt, clock)
    d = h.tick()
    assert d.action == "cooldown" and "cooldown for 20 s" in d.reason  # cooldown_up_s 30
    clock.t += 21
    assert h.tick().action == "scaled"
