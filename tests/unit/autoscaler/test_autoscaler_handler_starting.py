"""Stepping strategies wait for starting replicas (``hold_steps_while_starting``)
(fake ports, no I/O)."""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.autoscaler.handler_fakes import RPR, check_of, make_handler, make_policy

SLO = ("latency-slo", {"slo_s": 1.0})
TV = ("target-value", {"target": 10})
DELTA = ("threshold", {"lower_bound": 10, "delta": 1, "within_bounds_trigger": 1})

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
    policy = make_policy(checks=[check_of(*strategy)], hold_steps_while_starting=hold)
    h, _, tgt, _ = make_handler(policy, load=load, running=running, starting=starting)
    d = h.tick()
    assert d.action == action, d.reason
    assert [c[0] for c in tgt.calls] == calls
    if action == "starting":
        assert f"{starting} replica(s) still starting" in d.reason


def test_held_step_acts_once_the_starting_replicas_serve() -> None:
    policy = make_policy(checks=[check_of(*SLO)], cooldown_up_s=0)
    h, _, tgt, clock = make_handler(policy, load=5.0, running=2, starting=1)
    assert h.tick().action == "starting"
    tgt.running, tgt.starting = 3, 0  # the model finished loading; latency still high
    clock.t += 10
    d = h.tick()
    assert (d.action, d.current, d.desired) == ("scaled", 3, 4)
