"""The handler's checks: errors (NaN, a failing check, ``on_check_error``), range
queries over each check's window, the default demand check (fake ports, no I/O)."""

from __future__ import annotations

import math

from tests.unit.autoscaler.handler_fakes import RPR, Clock, Metrics, Target, check_of, make_handler, make_policy

from caravan.autoscaler.handler import PolicyHandler
from caravan.autoscaler.ports import MetricsError
from caravan.spec import EngineArgs, ModelSpec
from caravan.spec.autoscaling import policy_for

# a sizing check and a latency check whose query the tests make fail
LOAD_AND_TTFT = [
    {"name": "load", "query": "load",
     "strategy": {"name": "requests-per-replica", "params": {"target": 10}}},
    {"name": "ttft", "query": "ttft", "strategy": {"name": "latency-slo", "params": {"slo_s": 1}}},
]


def test_failing_check_blocks_scale_down() -> None:
    p = make_policy(
        scale_down_stabilization_s=0,
        checks=LOAD_AND_TTFT,
    )
    h, m, tgt, _ = make_handler(p, load=0, running=3)
    m.answers["ttft"] = MetricsError("query 'ttft': value is nan")
    d = h.tick()
    assert (d.action, d.desired) == ("none", 3) and "ttft" in d.reason and tgt.calls == []
    assert d.checks[1].vote.error is not None


def test_ignored_failing_check_lets_scale_down_through() -> None:
    p = make_policy(
        scale_down_stabilization_s=0,
        on_check_error="ignore",
        checks=LOAD_AND_TTFT,
    )
    h, m, tgt, _ = make_handler(p, load=0, running=3)
    m.answers["ttft"] = MetricsError("boom")
    assert h.tick().action == "scaled" and tgt.calls[0][0] == 1


def test_nan_is_a_check_error_not_zero() -> None:
    h, _m, tgt, _ = make_handler(make_policy(scale_down_stabilization_s=0), load=math.nan, running=3)
    d = h.tick()
    assert d.action == "none" and d.checks[0].vote.error and tgt.calls == []


def test_on_check_error_fail_aborts_the_evaluation_both_ways() -> None:
    checks = [check_of(*RPR), {**check_of(*RPR), "name": "broken", "query": "missing"}]
    h, _m, tgt, _c = make_handler(make_policy(checks=checks, on_check_error="fail"), load=45)
    d = h.tick()
    assert (d.action, d.direction) == ("none", "none") and "evaluation aborted" in d.reason
    assert tgt.calls == []


def test_checks_query_their_window_as_a_range_at_their_step() -> None:
    check = {**check_of(*RPR), "query_window_s": 30, "query_step_s": 2}
    h, m, _t, clock = make_handler(make_policy(checks=[check]), load=5)
    d = h.tick()
    assert m.ranges == [('load{model="m"}', clock.t - 30, clock.t, 2.0)]
    assert d.checks[0].samples == 16


def test_a_threshold_check_sees_its_window_in_one_evaluation() -> None:
    """nomad-autoscaler's example: within_bounds_trigger 5 over a 30 s window fires at the
    first evaluation, since the range holds ~30 points (it never fired with one sample
    per evaluation)."""
    params = {"lower_bound": 10, "delta": 1, "within_bounds_trigger": 5}
    check = {**check_of("threshold", params), "query_window_s": 30}
    h, _m, tgt, _c = make_handler(make_policy(checks=[check]), load=12, running=2)
    assert h.tick().action == "scaled" and tgt.calls[0][0] == 3


def test_default_policy_sizes_from_demand_not_in_flight() -> None:
    """The default check reads the llm_demand signal (arrivals x service time)."""
    m = ModelSpec(name="m", engine=EngineArgs(model="x"), replicas={"min": 1, "max": 8}, autoscaling={})
    policy = policy_for(m)
    assert policy is not None
    metrics, tgt, clock = Metrics({"envoy_cluster_upstream_rq_total": 48.0}), Target(), Clock()
    d = PolicyHandler(policy, metrics, tgt, clock).tick()
    assert (d.action, d.desired, d.checks[0].vote.check) == ("scaled", 3, "demand")
