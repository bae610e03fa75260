"""The per-policy state machine with a fake clock and in-memory ports (no I/O):
cooldowns, stabilization, dry run, errors, bounds, exported decisions."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry
from tests.unit.autoscaler.handler_fakes import Clock, Metrics, Target, make_handler, make_policy

from caravan.autoscaler.handler import PolicyHandler, build_autoscaler
from caravan.autoscaler.metrics import AutoscalerMetrics
from caravan.autoscaler.ports import NotReadyError, ScaleError
from caravan.spec import EngineArgs, ModelSpec, parse_spec
from caravan.spec.autoscaling import policy_for


def test_scale_up_acts_in_the_first_tick() -> None:
    h, _, tgt, _ = make_handler(load=35)
    d = h.tick()
    assert (d.action, d.direction, d.current, d.desired) == ("scaled", "up", 1, 4)
    assert tgt.calls[0][0] == 4 and tgt.calls[0][2]["caravan.direction"] == "up"


def test_cooldown_blocks_the_next_action_until_it_expires() -> None:
    h, m, tgt, clock = make_handler(load=35)
    h.tick()
    m.answers["load"] = 48  # wants 5 now
    clock.t += 29
    assert h.tick().action == "cooldown"
    clock.t += 2
    d = h.tick()
    assert (d.action, d.desired) == ("scaled", 5) and [c[0] for c in tgt.calls] == [4, 5]


def test_scale_down_waits_for_the_whole_stabilization_window() -> None:
    h, _m, tgt, clock = make_handler(load=0, running=4)
    actions = []
    for _ in range(11):  # 0, 10, ..., 100 s
        actions.append(h.tick().action)
        clock.t += 10
    assert actions[:10] == ["stabilizing"] * 10 and actions[10] == "scaled"
    assert tgt.calls[-1][0] == 1


def test_stabilization_restarts_when_the_decision_breaks() -> None:
    h, m, tgt, clock = make_handler(load=0, running=4)
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
    h, m, _tgt, clock = make_handler(make_policy(scale_down_stabilization_s=20), load=25, running=5)
    h.tick()  # wants 3
    clock.t += 10
    m.answers["load"] = 0
    h.tick()  # wants 1
    clock.t += 10
    d = h.tick()
    assert (d.action, d.desired) == ("scaled", 3)


def test_dry_run_decides_without_scaling() -> None:
    h, _, tgt, _ = make_handler(make_policy(dry_run=True), load=35)
    d = h.tick()
    assert (d.action, d.desired) == ("dry-run", 4) and tgt.calls == []


def test_explain_mode_does_not_scale() -> None:
    h, _, tgt, _ = make_handler(load=35)
    d = h.tick(act=False)
    assert (d.action, d.desired) == ("scale", 4) and tgt.calls == []


def test_not_ready_target_skips_the_round() -> None:
    h, _, tgt, _ = make_handler(load=35, ready=False)
    d = h.tick()
    assert d.action == "not-ready" and tgt.calls == []


def test_deployment_refusal_at_scale_time_is_not_ready_without_cooldown() -> None:
    h, _, tgt, clock = make_handler(
        load=35, refuse=NotReadyError("job scaling blocked due to active deployment")
    )
    assert h.tick().action == "not-ready"
    tgt.refuse = None
    clock.t += 10
    assert h.tick().action == "scaled"


def test_scale_failure_is_an_error_decision() -> None:
    h, _, _, _ = make_handler(load=35, refuse=ScaleError("permission denied"))
    d = h.tick()
    assert d.action == "error" and "permission denied" in d.reason


def test_starting_replicas_count_as_capacity() -> None:
    h, _, tgt, _ = make_handler(load=35, running=1, starting=3)
    d = h.tick()
    assert (d.current, d.action) == (4, "none") and tgt.calls == []


def test_policies_share_no_state() -> None:
    a, _, _, _ = make_handler(load=35)
    b, _, _, _ = make_handler(load=0, running=4)
    a.tick()
    b.tick()
    assert a.state.cooldown_until > 0 and b.state.cooldown_until == float("-inf")
    assert a.state.windows is not b.state.windows


def test_decisions_are_exported() -> None:
    reg = CollectorRegistry()
    metrics, tgt, clock = Metrics({"load": 35.0}), Target(), Clock()
    h = PolicyHandler(make_policy(), metrics, tgt, clock, AutoscalerMetrics(reg))
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
    h, _, tgt, _ = make_handler(make_policy(scale_down_stabilization_s=0), load=load, running=running)
    h.tick()
    assert tgt.calls[0][0] == expected


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
    h = PolicyHandler(make_policy(), Metrics({"load": 35}), tgt, clock)
    d = h.tick()
    assert d.action == "cooldown" and "cooldown for 20 s" in d.reason  # cooldown_up_s 30
    clock.t += 21
    assert h.tick().action == "scaled"
