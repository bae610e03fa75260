"""How fast, how right-sized and how calm is the autoscaler? A pure, seeded simulation.

    .venv/bin/python benchmarks/autoscale.py [--seed 7] [--steady-hours 6]

The real ``PolicyHandler`` drives a fluid queueing model of LLM replicas on a fake
clock advanced in 1 s steps: Poisson arrivals; each request holds one of ``slots``
batch slots of a serving replica for ``service_s`` on average; requests beyond the
free slots wait in a queue. A new replica serves only after a model load of 30-120 s
(seeded). The simulation answers the policy's PromQL like Prometheus would, from
values ``scrape_lag_s`` old:

* ``llm_demand`` (Little's law): arrivals over the check's window x the measured mean
  service time (busy slot-seconds / completions over 5 min); in-flight while nothing
  has completed yet.
* Checks are range queries: one point per second over the check's window (as
  Prometheus evaluates a ``query_range`` at a 1 s step).
* ``envoy_in_flight``: busy slots + queue.
* TTFT p95 (latency-slo scenarios): the queue wait, queue / admission rate (the fluid
  model has no spread, so mean and p95 coincide: an approximation).

Scenarios (``needed`` = ceil(12 req/s x 4 s / target 16) = 3 replicas):

* step: 2 -> 12 req/s at t=300 s with the default policy (``llm_demand``,
  requests-per-replica target 16). Reaction = signal crossing -> decision -> first new
  replica serving (target: decision within one evaluation interval of the crossing);
  peak replicas requested and placed vs needed.
* step_uncounted: the same, but the target reports running allocations only and places
  ``count - running`` new ones, ignoring those still starting: the behaviour reported
  in nomad-autoscaler #540 (what counting starting allocations as capacity avoids).
* step_in_flight(_uncounted): the previous default check (``envoy_in_flight``), which
  reads the backlog that builds during model loads as demand.
* step_latency_slo / _no_hold: a stepping strategy (latency-slo on TTFT p95, SLO 2 s)
  with and without the handler's hold while replicas start.
* steady / steady_edge: constant load for hours, mid-band and right at a replica
  boundary, default policy. Direction changes among scale actions. Target: 0.

Against the Nomad fake (``tests/fakes/nomad/``, loaded by ``fakes.load_fake``) on the same simulated
clock, with the rendered job, ``NomadScaleTarget`` over HTTP, and the Sim's serving
replicas = the fake's allocations whose model has loaded:

* nomad_step: the load step on a roomy cluster, where every scale starts a deployment
  (the rounds during it are not-ready). Crossing -> decision, step -> first new replica
  serving.
* nomad_full: 6 -> 12 req/s at 300 s on a cluster with no free GPU, then 2 req/s at 900 s.
  Intervals until "capacity exhausted"; after the drop: until the group can be scaled,
  the first down decision, the scale-down. nomad_full_without_release: the same when the
  stuck deployment is left to Nomad's progress deadline (what happened before).
* nomad_steady_edge: 8 req/s for ``--steady-hours`` with deployments. Target: 0 direction
  changes.

Writes benchmarks/results/autoscale.json.
"""


from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import random
from pathlib import Path
from typing import Any

from autoscale_nomad import nomad_scenarios, print_nomad
from autoscale_sim import Sim, run_sim, signal_crossing, sim_policy

from caravan.spec.autoscaling import ScalingPolicy

RESULTS = Path(__file__).parent / "results" / "autoscale.json"
IN_FLIGHT_CHECK = {
    "name": "in-flight",
    "signal": "envoy_in_flight",
    "query_window_s": 30,
    "strategy": {"name": "requests-per-replica", "params": {"target": 16, "tolerance": 0.1}},
}


TTFT_CHECK = {
    "name": "ttft",
    "signal": "vllm_ttft_p95",
    "query_window_s": 60,
    "strategy": {"name": "latency-slo", "params": {"slo_s": 2.0, "down_ratio": 0.25}},
}


def step_scenario(seed: int, policy: ScalingPolicy, count_starting: bool = True) -> dict[str, Any]:
    window = round(policy.checks[0].query_window_s)
    sim = Sim(random.Random(seed), random.Random(seed + 1), window, count_starting=count_starting)
    step_at, horizon, high = 300, 900, 12.0
    rates = [2.0 if t < step_at else high for t in range(horizon)]
    decisions = run_sim(sim, rates, policy)
    ups = [d for d in decisions if d.action == "scaled" and d.direction == "up"]
    first = ups[0] if ups else None
    cross = signal_crossing(sim, policy, step_at)
    after = (first.at - cross) if first and cross is not None else None
    return {
        "check": policy.checks[0].name,
        "count_starting_as_capacity": count_starting,
        "step_at_s": step_at,
        "signal_crossed_at_s": cross,
        "decision_at_s": first.at if first else None,
        "decision_after_crossing_s": after,
        "step_to_decision_s": (first.at - step_at) if first else None,
        "evaluation_interval_s": policy.evaluation_interval_s,
        "first_new_replica_serving_at_s": sim.first_new_serving,
        "step_to_serving_s": (sim.first_new_serving - step_at) if sim.first_new_serving else None,
        "scale_ups": [(d.at, d.current, d.desired) for d in ups],
        "held_while_starting": sum(1 for d in decisions if d.action == "starting"),
        "needed_replicas": math.ceil(high * sim.service_s / 16),
        "peak_replicas_requested": max((d.desired for d in ups), default=1),
        "peak_replicas_placed": sim.peak_placed,
        "replicas_at_end": sim.serving + len(sim.starting),
        "peak_in_flight": max(sim.in_flight_hist),
    }


def steady_scenario(seed: int, rate: float, hours: float) -> dict[str, Any]:
    policy = sim_policy()
    sim = Sim(random.Random(seed), random.Random(seed + 1), round(policy.checks[0].query_window_s))
    decisions = run_sim(sim, [rate] * int(hours * 3600), policy)
    actions = [d for d in decisions if d.action == "scaled"]
    dirs = [d.direction for d in actions]
    return {
        "check": policy.checks[0].name,
        "rate_req_s": rate,
        "hours": hours,
        "mean_in_flight": sum(sim.in_flight_hist) / len(sim.in_flight_hist),
        "scale_actions": len(actions),
        "scale_actions_after_settling": len([d for d in actions if d.at > 900.0]),
        "direction_changes": sum(1 for a, b in itertools.pairwise(dirs) if a != b),
        "final_replicas": sim.serving + len(sim.starting),
        "actions": [(d.at, d.direction, d.current, d.desired) for d in actions],
    }


def seed_sweep(seeds: range) -> dict[str, Any]:
    """The load step and a 1 h boundary-load run over several seeds: peaks and flaps."""
    demand, in_flight = sim_policy(), sim_policy(IN_FLIGHT_CHECK)
    rows = []
    for seed in seeds:
        d, f = step_scenario(seed, demand), step_scenario(seed, in_flight)
        u = step_scenario(seed, demand, count_starting=False)
        edge = steady_scenario(seed, 8.0, 1.0)
        rows.append({
            "seed": seed,
            "demand_peak_requested": d["peak_replicas_requested"],
            "demand_decision_after_crossing_s": d["decision_after_crossing_s"],
            "demand_uncounted_peak_placed": u["peak_replicas_placed"],
            "in_flight_peak_requested": f["peak_replicas_requested"],
            "steady_edge_direction_changes": edge["direction_changes"],
        })
    return {"seeds": [seeds.start, seeds.stop - 1], "rows": rows}


def scenarios(seed: int, hours: float) -> dict[str, Any]:
    demand, in_flight = sim_policy(), sim_policy(IN_FLIGHT_CHECK)
    return {
        "step": step_scenario(seed, demand),
        "step_uncounted": step_scenario(seed, demand, count_starting=False),
        "step_in_flight": step_scenario(seed, in_flight),
        "step_in_flight_uncounted": step_scenario(seed, in_flight, count_starting=False),
        "step_latency_slo": step_scenario(seed, sim_policy(TTFT_CHECK)),
        "step_latency_slo_no_hold": step_scenario(
            seed, sim_policy(TTFT_CHECK, hold_steps_while_starting=False)
        ),
        # 6 req/s * 4 s = 24 in flight: mid-band for 2 replicas of target 16.
        "steady": steady_scenario(seed, 6.0, hours),
        # 8 req/s * 4 s = 32 in flight: exactly 2 replicas' target, noise on both sides.
        "steady_edge": steady_scenario(seed + 1, 8.0, hours),
        "seed_sweep": seed_sweep(range(1, 11)),
        **nomad_scenarios(seed, hours),
    }


def _print(out: dict[str, Any]) -> None:
    print("scenario                  | check     | starting counted | crossing->decision | "
          "step->serving | peak requested | peak placed | needed | at 900 s")
    for key, s in out.items():
        if not key.startswith("step"):
            continue
        after = s["decision_after_crossing_s"]
        print(
            f"{key:<25} | {s['check']:<9} | {s['count_starting_as_capacity']!s:<16} | "
            f"{'-' if after is None else f'{after:g} s':>18} | {s['step_to_serving_s']:>11} s | "
            f"{s['peak_replicas_requested']:>14} | {s['peak_replicas_placed']:>11} | "
            f"{s['needed_replicas']:>6} | {s['replicas_at_end']:>8}"
        )
    rows = out["seed_sweep"]["rows"]

    def span(key: str) -> str:
        values = [r[key] for r in rows]
        return f"{min(values)}-{max(values)}"

    print(
        f"seeds {out['seed_sweep']['seeds']}: peak requested demand {span('demand_peak_requested')}"
        f" vs in-flight {span('in_flight_peak_requested')}; demand uncounted placed "
        f"{span('demand_uncounted_peak_placed')}; crossing->decision "
        f"{span('demand_decision_after_crossing_s')} s; 1 h at the boundary: "
        f"{span('steady_edge_direction_changes')} direction changes"
    )
    for key in ("steady", "steady_edge"):
        r = out[key]
        print(
            f"{key}: {r['rate_req_s']:g} req/s for {r['hours']:g} h (mean in-flight "
            f"{r['mean_in_flight']:.1f}): {r['scale_actions']} scale actions "
            f"({r['scale_actions_after_settling']} after settling), "
            f"{r['direction_changes']} direction changes, final replicas {r['final_replicas']}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--steady-hours", type=float, default=6.0)
    args = ap.parse_args()
    logging.disable(logging.INFO)
    results = scenarios(args.seed, args.steady_hours)
    out = {
        "seed": args.seed,
        "model": "service 4 s/request, 32 slots/replica, load delay 30-120 s, scrape lag 2 s",
        "policy": sim_policy().model_dump(mode="json", exclude={"checks"}),
        **results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    _print(results)
    print_nomad(results)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
