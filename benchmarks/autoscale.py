"""How fast and how calm is the autoscaler? A pure, seeded simulation on a fake clock.

    .venv/bin/python benchmarks/autoscale.py [--seed 7] [--steady-hours 6]

The real ``PolicyHandler`` (the spec's default check: Envoy in-flight requests,
``requests-per-replica`` target 16) drives a simple queueing model of LLM replicas:
Poisson arrivals, each request holds one of ``slots`` batch slots of a replica for
``service_s``; requests beyond the free slots wait in Envoy's pending queue. A new
replica serves only after a model load of 30-120 s (seeded). Prometheus' scrape lag
is modelled (the signal is ``scrape_lag_s`` old).

Scenarios:
* step: 2 -> 12 req/s at t=300 s. Reaction = signal crossing -> scale decision ->
  first new replica serving. Target: decision within one evaluation interval.
* step-uncounted: the same with starting replicas NOT counted as capacity (what the
  Nomad Autoscaler does, #540), to show the over-scaling Caravan avoids.
* steady / steady-edge: constant load for hours (mid-band and right at a replica
  boundary). Direction changes (up<->down reversals) among scale actions. Target: 0.

Writes benchmarks/results/autoscale.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caravan.autoscaler.handler import PolicyHandler, ScalingDecision
from caravan.autoscaler.policy import ScalingPolicy, policy_for
from caravan.autoscaler.ports import TargetStatus
from caravan.spec import EngineArgs, ModelSpec

RESULTS = Path(__file__).parent / "results" / "autoscale.json"


@dataclass
class Sim:
    """Fluid-ish queueing model, advanced in 1 s steps. Not thread-safe (single owner)."""

    rng: random.Random
    service_s: float = 4.0
    slots: int = 32
    load_delay_s: tuple[float, float] = (30.0, 120.0)
    scrape_lag_s: int = 2
    count_starting: bool = True
    t: float = 0.0
    active: float = 0.0
    pending: float = 0.0
    serving: int = 1
    starting: list[float] = field(default_factory=list)  # ready-at times
    history: list[float] = field(default_factory=list)  # in-flight per second
    first_new_serving: float | None = None

    def step(self, rate: float) -> None:
        self.t += 1.0
        ready = [r for r in self.starting if r <= self.t]
        if ready and self.first_new_serving is None:
            self.first_new_serving = self.t
        self.serving += len(ready)
        self.starting = [r for r in self.starting if r > self.t]
        self.pending += _poisson(self.rng, rate)
        self.active -= self.active / self.service_s
        admit = min(self.pending, max(self.serving * self.slots - self.active, 0.0))
        self.active, self.pending = self.active + admit, self.pending - admit
        self.history.append(self.active + self.pending)

    def in_flight(self) -> float:
        """What Prometheus would return now: the value ``scrape_lag_s`` ago."""
        i = max(len(self.history) - 1 - self.scrape_lag_s, 0)
        return self.history[i] if self.history else 0.0

    # MetricsSource
    def query(self, promql: str) -> float:
        return self.in_flight()

    # ScaleTarget
    def status(self, model: str) -> TargetStatus:
        starting = len(self.starting) if self.count_starting else 0
        return TargetStatus(self.serving, starting, self.serving + len(self.starting))

    def scale(self, model: str, count: int, reason: str, meta: Mapping[str, str]) -> None:
        have = self.serving + len(self.starting)
        for _ in range(count - have):
            self.starting.append(self.t + self.rng.uniform(*self.load_delay_s))
        for _ in range(have - count):  # drain: the newest (starting) ones first
            if self.starting:
                self.starting.pop()
            else:
                self.serving -= 1


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's method for small lambda, normal approximation above 30."""
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _policy() -> ScalingPolicy:
    m = ModelSpec(
        name="llama", engine=EngineArgs(model="x"), replicas={"min": 1, "max": 8}, autoscaling={}
    )
    p = policy_for(m)
    assert p is not None
    return p


def _run(sim: Sim, rates: list[float], policy: ScalingPolicy) -> list[ScalingDecision]:
    """Step the simulation second by second; tick the handler every evaluation interval."""
    handler = PolicyHandler(policy, sim, sim, clock=lambda: sim.t)
    every = round(policy.evaluation_interval_s)
    decisions = []
    for i, rate in enumerate(rates):
        sim.step(rate)
        if (i + 1) % every == 0:
            decisions.append(handler.tick())
    return decisions


def step_scenario(seed: int, count_starting: bool = True) -> dict[str, Any]:
    policy = _policy()
    sim = Sim(random.Random(seed), count_starting=count_starting)
    step_at, horizon = 300, 900
    rates = [2.0 if t < step_at else 12.0 for t in range(horizon)]
    decisions = _run(sim, rates, policy)
    target = policy.checks[0].strategy.params["target"]
    tol = 0.1
    cross = next(
        t + 1 for t, v in enumerate(sim.history) if t >= step_at and v > target * 1 * (1 + tol)
    )
    ups = [d for d in decisions if d.action == "scaled" and d.direction == "up"]
    first = ups[0] if ups else None
    return {
        "step_at_s": step_at,
        "signal_crossed_at_s": cross,
        "decision_at_s": first.at if first else None,
        "decision_after_crossing_s": (first.at - cross) if first else None,
        "evaluation_interval_s": policy.evaluation_interval_s,
        "first_new_replica_serving_at_s": sim.first_new_serving,
        "step_to_serving_s": (sim.first_new_serving - step_at) if sim.first_new_serving else None,
        "scale_ups": [(d.at, d.current, d.desired) for d in ups],
        "final_replicas": sim.serving + len(sim.starting),
        "peak_replicas_requested": max((d.desired for d in ups), default=1),
        "peak_in_flight": max(sim.history),
        "count_starting_as_capacity": count_starting,
    }


def steady_scenario(seed: int, rate: float, hours: float) -> dict[str, Any]:
    policy = _policy()
    sim = Sim(random.Random(seed))
    n = int(hours * 3600)
    decisions = _run(sim, [rate] * n, policy)
    actions = [d for d in decisions if d.action == "scaled"]
    settle = 900.0  # the first 15 min may scale to fit
    late = [d for d in actions if d.at > settle]
    dirs = [d.direction for d in actions]
    reversals = sum(1 for a, b in itertools.pairwise(dirs) if a != b)
    return {
        "rate_req_s": rate,
        "hours": hours,
        "mean_in_flight": sum(sim.history) / len(sim.history),
        "scale_actions": len(actions),
        "scale_actions_after_settling": len(late),
        "direction_changes": reversals,
        "final_replicas": sim.serving + len(sim.starting),
        "actions": [(d.at, d.direction, d.current, d.desired) for d in actions],
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--steady-hours", type=float, default=6.0)
    args = ap.parse_args()
    logging.disable(logging.INFO)
    out = {
        "seed": args.seed,
        "model": "service 4 s/request, 32 slots/replica, load delay 30-120 s, scrape lag 2 s",
        "policy": _policy().model_dump(mode="json", exclude={"checks"}),
        "step": step_scenario(args.seed),
        "step_uncounted_starting": step_scenario(args.seed, count_starting=False),
        # 6 req/s * 4 s = 24 in flight: mid-band for 2 replicas of target 16.
        "steady": steady_scenario(args.seed, 6.0, args.steady_hours),
        # 8 req/s * 4 s = 32 in flight: exactly 2 replicas' target, noise on both sides.
        "steady_edge": steady_scenario(args.seed + 1, 8.0, args.steady_hours),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    s, u = out["step"], out["step_uncounted_starting"]
    print(
        f"step 2->12 req/s at t={s['step_at_s']}s: signal crossed at {s['signal_crossed_at_s']}s, "
        f"decision at {s['decision_at_s']}s (+{s['decision_after_crossing_s']}s; "
        f"interval {s['evaluation_interval_s']:g}s), first new replica serving at "
        f"{s['first_new_replica_serving_at_s']}s (step->serving {s['step_to_serving_s']}s), "
        f"peak replicas requested {s['peak_replicas_requested']} (3 carry 12 req/s; backlog "
        f"peak {s['peak_in_flight']:.0f} in flight), replicas at t=900 s {s['final_replicas']}"
    )
    print(
        f"  same step, starting replicas not counted (Nomad Autoscaler #540): "
        f"peak replicas requested {u['peak_replicas_requested']}, scale-ups {len(u['scale_ups'])}"
    )
    for key in ("steady", "steady_edge"):
        r = out[key]
        print(
            f"{key}: {r['rate_req_s']:g} req/s for {r['hours']:g} h (mean in-flight "
            f"{r['mean_in_flight']:.1f}): {r['scale_actions']} scale actions "
            f"({r['scale_actions_after_settling']} after settling), "
            f"{r['direction_changes']} direction changes, final replicas {r['final_replicas']}"
        )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
