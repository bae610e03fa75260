"""Exhausted capacity: a shortfall is released (when ours) and scale-ups are held at
what was placed; the capacity gauge (fake ports, no I/O)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from tests.unit.autoscaler.handler_fakes import Clock, Metrics, Target, make_handler, make_policy

from caravan.autoscaler.handler import PolicyHandler
from caravan.autoscaler.metrics import AutoscalerMetrics
from caravan.autoscaler.ports import Shortfall

STUCK = Shortfall("placement failed: devices: no devices match request (1 node(s)); 2 of 4 "
                  "placed", placeable=2, releasable=True)


def test_a_releasable_shortfall_is_released_and_scale_ups_are_held_at_what_was_placed() -> None:
    h, _m, tgt, clock = make_handler(make_policy(capacity_backoff_s=100), load=45, running=2,
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
    h, _m, tgt, _c = make_handler(load=45, running=2, ready=False, shortfall=foreign, desired=4)
    d = h.tick()
    assert d.action == "capacity" and "progress deadline" in d.reason
    assert tgt.released == []


def test_dry_run_never_releases() -> None:
    h, _m, tgt, _c = make_handler(make_policy(dry_run=True), load=45, running=2, ready=False,
                              shortfall=STUCK, desired=4)
    assert h.tick().action == "capacity" and tgt.released == []


def test_scale_down_is_not_held_by_exhausted_capacity() -> None:
    h, _m, tgt, clock = make_handler(make_policy(capacity_backoff_s=1000), load=45, running=2,
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
    h, _m, tgt, clock = make_handler(load=45, running=2, shortfall=plain, desired=4)
    for _ in range(3):
        d = h.tick()
        clock.t += 10
        assert d.action == "capacity" and d.capacity_cap == 2
    assert tgt.calls == [] and tgt.released == []


def test_capacity_gauge_follows_the_hold() -> None:
    registry = CollectorRegistry()
    metrics, tgt, clock = Metrics({"load": 45}), Target(running=2, ready=False, shortfall=STUCK,
                                                         desired=4), Clock()
    h = PolicyHandler(make_policy(capacity_backoff_s=50), metrics, tgt, clock,
                      AutoscalerMetrics(registry))
    h.tick()
    labels = {"model": "m"}
    assert registry.get_sample_value("caravan_autoscaler_capacity_exhausted", labels) == 1.0
    clock.t += 60
    h.tick()
    assert registry.get_sample_value("caravan_autoscaler_capacity_exhausted", labels) == 0.0
