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
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from caravan.autoscaler.handler import PolicyHandler, ScalingDecision
from caravan.autoscaler.nomad import NomadScaleTarget
from caravan.autoscaler.ports import TargetStatus
from caravan.nomad.job_json import job_request
from caravan.nomad.triton_job import job_id, triton_job
from caravan.spec import EngineArgs, ModelSpec, PlatformSpec, names
from caravan.spec.autoscaling import ScalingPolicy, policy_for
from caravan.spec.strategy_params import LatencySlo, RequestsPerReplica
from fakes import load_fake

RESULTS = Path(__file__).parent / "results" / "autoscale.json"
ROOT = Path(__file__).resolve().parents[1]
SERVICE_WINDOW_S = 300  # the 5 min of the llm_demand signal's service-time rates
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


@dataclass
class Sim:
    """Fluid-ish queueing model, advanced in 1 s steps. Not thread-safe (single owner).

    Also plays Prometheus (``query``) and the scale target (``status``/``scale``).
    ``count_starting`` False models nomad-autoscaler #540 (see module doc).
    """

    rng: random.Random  # arrivals
    load_rng: random.Random  # model load delays (separate, so scenarios draw the same delays)
    demand_window_s: int = 60
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
    first_new_serving: float | None = None
    peak_placed: int = 1
    arrivals: list[float] = field(default_factory=lambda: [0.0])  # prefix sums per second
    busy: list[float] = field(default_factory=lambda: [0.0])  # slot-seconds, prefix sums
    done: list[float] = field(default_factory=lambda: [0.0])  # completions, prefix sums
    in_flight_hist: list[float] = field(default_factory=list)
    wait_hist: list[float] = field(default_factory=list)

    def step(self, rate: float) -> None:
        self.t += 1.0
        ready = [r for r in self.starting if r <= self.t]
        if ready and self.first_new_serving is None:
            self.first_new_serving = self.t
        self.serving += len(ready)
        self.starting = [r for r in self.starting if r > self.t]
        arrived = _poisson(self.rng, rate)
        self.pending += arrived
        finished = self.active / self.service_s
        busy = self.active
        self.active -= finished
        capacity = self.serving * self.slots
        admit = min(self.pending, max(capacity - self.active, 0.0))
        self.active, self.pending = self.active + admit, self.pending - admit
        self.arrivals.append(self.arrivals[-1] + arrived)
        self.busy.append(self.busy[-1] + busy)
        self.done.append(self.done[-1] + finished)
        self.in_flight_hist.append(self.active + self.pending)
        self.wait_hist.append(self.pending / max(capacity / self.service_s, 1e-9))

    def _at(self) -> int:
        """The index (seconds) Prometheus' latest scrape reflects."""
        return max(len(self.in_flight_hist) - self.scrape_lag_s, 1)

    def demand(self, at: int | None = None) -> float:
        """Arrival rate over the window x mean service time over 5 min (Little's law)."""
        i = self._at() if at is None else at
        w = min(self.demand_window_s, i)
        rate = (self.arrivals[i] - self.arrivals[i - w]) / w
        j = max(i - SERVICE_WINDOW_S, 0)
        completions = self.done[i] - self.done[j]
        if completions <= 0:
            return self.in_flight_hist[i - 1]
        return rate * (self.busy[i] - self.busy[j]) / completions

    # MetricsSource
    def query(self, promql: str) -> float:
        return self._value(promql, self._at())

    def query_range(self, promql: str, start: float, end: float,
                    step_s: float) -> list[tuple[float, float]]:
        """Points every ``step_s`` over [start, end], the last one at the latest scrape
        (times are the caller's clock; the model answers from its own seconds)."""
        n = round((end - start) / step_s) + 1
        last = self._at()
        points = []
        for k in range(n):
            i = last - round((n - 1 - k) * step_s)
            if i >= 1:
                points.append((start + k * step_s, self._value(promql, i)))
        return points

    def _value(self, promql: str, i: int) -> float:
        if "envoy_cluster_upstream_rq_total" in promql:
            return self.demand(i)
        if "histogram_quantile" in promql:
            return self.wait_hist[i - 1]
        return self.in_flight_hist[i - 1]

    # ScaleTarget
    def status(self, model: str) -> TargetStatus:
        if not self.count_starting:
            return TargetStatus(self.serving, 0, self.serving)
        return TargetStatus(self.serving, len(self.starting), self.serving + len(self.starting))

    def release(self, model: str, reason: str) -> None:
        """Nothing to give back: the simulated cluster places every replica."""

    def scale(self, model: str, count: int, reason: str, meta: Mapping[str, str]) -> None:
        have = self.serving + len(self.starting) if self.count_starting else self.serving
        for _ in range(count - have):
            self.starting.append(self.t + self.load_rng.uniform(*self.load_delay_s))
        for _ in range(have - count):  # drain: the newest (starting) ones first
            if self.starting:
                self.starting.pop()
            else:
                self.serving -= 1
        self.peak_placed = max(self.peak_placed, self.serving + len(self.starting))


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


COOLDOWNS = {"cooldown_up_s": 30, "cooldown_down_s": 60}  # as in examples/platform.yaml


def _policy(check: dict[str, Any] | None = None, **over: Any) -> ScalingPolicy:
    raw: dict[str, Any] = {**COOLDOWNS, **over}
    if check is not None:
        raw["checks"] = [check]
    m = ModelSpec(
        name="llama", engine=EngineArgs(model="x"), replicas={"min": 1, "max": 8}, autoscaling=raw
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


def _crossing(sim: Sim, policy: ScalingPolicy, step_at: int) -> int | None:
    """First second after the step at which the check's signal (as scraped) crosses
    one replica's up threshold: target x (1 + tolerance), or the latency SLO."""
    check = policy.checks[0]
    strategy = check.strategy
    if isinstance(strategy, LatencySlo):
        bar, series = strategy.params.slo_s, sim.wait_hist
    elif isinstance(strategy, RequestsPerReplica):
        bar = strategy.params.target * (1 + strategy.params.tolerance)
        series = sim.in_flight_hist
    else:
        raise ValueError(f"no crossing for strategy {strategy.name!r}")
    for t in range(step_at, len(series)):
        i = max(t + 1 - sim.scrape_lag_s, 1)
        value = sim.demand(i) if check.signal == "llm_demand" else series[i - 1]
        if value > bar:
            return t + 1
    return None


def step_scenario(seed: int, policy: ScalingPolicy, count_starting: bool = True) -> dict[str, Any]:
    window = round(policy.checks[0].query_window_s)
    sim = Sim(random.Random(seed), random.Random(seed + 1), window, count_starting=count_starting)
    step_at, horizon, high = 300, 900, 12.0
    rates = [2.0 if t < step_at else high for t in range(horizon)]
    decisions = _run(sim, rates, policy)
    ups = [d for d in decisions if d.action == "scaled" and d.direction == "up"]
    first = ups[0] if ups else None
    cross = _crossing(sim, policy, step_at)
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
    policy = _policy()
    sim = Sim(random.Random(seed), random.Random(seed + 1), round(policy.checks[0].query_window_s))
    decisions = _run(sim, [rate] * int(hours * 3600), policy)
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
    demand, in_flight = _policy(), _policy(IN_FLIGHT_CHECK)
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


# ---- against the Nomad fake (tests/fakes/nomad/) on the simulated clock -----------------


def nomad_fake() -> ModuleType:
    """The Nomad fake (``tests/fakes/nomad/``)."""
    return load_fake("nomad")


@dataclass
class NoRelease:
    """What Nomad does when nobody gives the stuck scale-up back: the autoscaler sees the
    shortfall but cannot release it, so the deployment runs to its progress deadline."""

    target: NomadScaleTarget

    def status(self, model: str) -> TargetStatus:
        st = self.target.status(model)
        sf = st.shortfall
        return st if sf is None else replace(st, shortfall=replace(sf, releasable=False))

    def scale(self, model: str, count: int, reason: str, meta: Mapping[str, str]) -> None:
        self.target.scale(model, count, reason, meta)

    def release(self, model: str, reason: str) -> None:
        raise AssertionError("NoRelease never releases")


@dataclass
class NomadRun:
    """The queueing ``Sim`` whose replicas are the fake's allocations: Nomad places them
    (or cannot), loads take ``load_s``, every count change deploys; one Sim second is one
    second of the fake's clock."""

    sim: Sim
    fake: Any
    handler: PolicyHandler
    job: str
    t0: float
    decisions: list[tuple[float, ScalingDecision]] = field(default_factory=list)
    serving: list[int] = field(default_factory=list)  # per second

    def run(self, rates: list[float]) -> None:
        every = round(self.handler.policy.evaluation_interval_s)
        for i, rate in enumerate(rates):
            self.fake.advance(1.0)
            self.sim.serving = self.fake.serving(self.job, names.NOMAD_GROUP)
            self.serving.append(self.sim.serving)
            self.sim.step(rate)
            if (i + 1) % every == 0:
                self.decisions.append((float(i + 1), self.handler.tick()))

    def more_serving(self, after: int) -> float | None:
        """The first second after ``after`` with more replicas serving than at ``after``."""
        base = self.serving[after - 1]
        return next((float(t + 1) for t in range(after, len(self.serving))
                     if self.serving[t] > base), None)

    def first(self, after: float, *actions: str, direction: str | None = None) -> float | None:
        return next((t for t, d in self.decisions if t > after and d.action in actions
                     and (direction is None or d.direction == direction)), None)


def _nomad_model(initial: int) -> ModelSpec:
    policy = _policy()
    raw = {"checks": [c.model_dump() for c in policy.checks], "capacity_backoff_s": 600,
           **COOLDOWNS}
    return ModelSpec(name="llama", engine=EngineArgs(model="x"), autoscaling=raw,
                     replicas={"min": 1, "initial": initial, "max": 8})


def nomad_run(seed: int, gpu_nodes: list[int] | None, initial: int, release: bool = True,
              ) -> tuple[NomadRun, Any]:
    """A started fake with the rendered job of one model, settled, and its runner."""
    import nomad

    model = _nomad_model(initial)
    spec, jid = PlatformSpec(models=[model]), job_id(model)
    fake = nomad_fake().FakeNomad(gpu_nodes=gpu_nodes).start()
    load_rng = random.Random(seed + 1)
    load_s = load_rng.uniform(30.0, 120.0)
    fake.set_model_load(jid, load_s)
    client = nomad.Nomad(address=fake.address, timeout=10)
    client.jobs.register_job(job_request(triton_job(spec, model)))
    fake.advance(load_s + 31)
    target: Any = NomadScaleTarget(client, {model.name: (jid, names.NOMAD_GROUP)}, clock=fake.clock)
    if not release:
        target = NoRelease(target)
    policy = policy_for(model)
    assert policy is not None
    sim = Sim(random.Random(seed), load_rng, round(policy.checks[0].query_window_s))
    sim.serving = fake.serving(jid, names.NOMAD_GROUP)
    handler = PolicyHandler(policy, sim, target, clock=fake.clock)
    return NomadRun(sim, fake, handler, jid, fake.clock()), fake


def _summary(run: NomadRun) -> dict[str, Any]:
    acts = [d for _, d in run.decisions]
    return {
        "scale_posts": [(t, d.current, d.desired) for t, d in run.decisions if d.action == "scaled"],
        "not_ready_ticks": sum(d.action == "not-ready" for d in acts),
        "capacity_ticks": sum(d.action == "capacity" for d in acts),
        "refused_by_nomad": sum("target refused" in d.reason for d in acts),
        "deployments": len(run.fake.deployments(run.job)),
    }


def nomad_step_scenario(seed: int) -> dict[str, Any]:
    """2 -> 12 req/s at t = 300 s on a roomy cluster: every scale starts a deployment."""
    run, fake = nomad_run(seed, None, initial=1)
    try:
        step_at = 300
        run.run([2.0 if t < step_at else 12.0 for t in range(1200)])
        cross = _crossing(run.sim, run.handler.policy, step_at)
        up = run.first(step_at, "scaled", direction="up")
        serving = run.more_serving(step_at)
        return {"step_at_s": step_at, "signal_crossed_at_s": cross, "decision_at_s": up,
                "decision_after_crossing_s": None if up is None or cross is None else up - cross,
                "evaluation_interval_s": run.handler.policy.evaluation_interval_s,
                "first_new_replica_serving_at_s": serving,
                "step_to_serving_s": None if serving is None else serving - step_at,
                "serving_at_end": run.sim.serving, **_summary(run)}
    finally:
        fake.stop()


def nomad_full_scenario(seed: int, release: bool = True) -> dict[str, Any]:
    """A step on a cluster with no free GPU, then a load drop."""
    run, fake = nomad_run(seed, [2], initial=2, release=release)
    try:
        step_at, drop_at, end = 300, 900, 2700
        run.run([6.0 if t < step_at else 12.0 if t < drop_at else 2.0 for t in range(end)])
        up = run.first(step_at, "scaled", direction="up")
        noticed = run.first(step_at, "capacity")
        scalable = next((t for t, d in run.decisions if t > drop_at and d.status is not None
                         and d.status.ready), None)
        down_vote = run.first(drop_at, "stabilizing")
        down = run.first(drop_at, "scaled", direction="down")
        interval = run.handler.policy.evaluation_interval_s
        return {
            "release": release, "step_at_s": step_at, "drop_at_s": drop_at,
            "scale_up_at_s": up, "capacity_noticed_at_s": noticed,
            "noticed_after_scale_up_intervals": None if up is None or noticed is None
            else (noticed - up) / interval,
            "scalable_after_drop_s": None if scalable is None else scalable - drop_at,
            "first_down_decision_after_drop_s": None if down_vote is None else down_vote - drop_at,
            "scale_down_after_drop_s": None if down is None else down - drop_at,
            "scale_up_posts_after_notice": sum(1 for t, d in run.decisions if noticed and t > noticed
                                               and d.action == "scaled" and d.direction == "up"),
            **_summary(run)}
    finally:
        fake.stop()


def nomad_steady_scenario(seed: int, rate: float, hours: float) -> dict[str, Any]:
    """Constant load for hours with a deployment on every scale."""
    run, fake = nomad_run(seed, None, initial=1)
    try:
        run.run([rate] * int(hours * 3600))
        dirs = [d.direction for _, d in run.decisions if d.action == "scaled"]
        return {"rate_req_s": rate, "hours": hours,
                "direction_changes": sum(1 for a, b in itertools.pairwise(dirs) if a != b),
                "final_replicas": fake.job(run.job)["TaskGroups"][0]["Count"], **_summary(run)}
    finally:
        fake.stop()


def nomad_scenarios(seed: int, hours: float) -> dict[str, Any]:
    return {
        "nomad_step": nomad_step_scenario(seed),
        "nomad_full": nomad_full_scenario(seed),
        "nomad_full_without_release": nomad_full_scenario(seed, release=False),
        "nomad_steady_edge": nomad_steady_scenario(seed + 1, 8.0, hours),
    }


def scenarios(seed: int, hours: float) -> dict[str, Any]:
    demand, in_flight = _policy(), _policy(IN_FLIGHT_CHECK)
    return {
        "step": step_scenario(seed, demand),
        "step_uncounted": step_scenario(seed, demand, count_starting=False),
        "step_in_flight": step_scenario(seed, in_flight),
        "step_in_flight_uncounted": step_scenario(seed, in_flight, count_starting=False),
        "step_latency_slo": step_scenario(seed, _policy(TTFT_CHECK)),
        "step_latency_slo_no_hold": step_scenario(
            seed, _policy(TTFT_CHECK, hold_steps_while_starting=False)
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


def _print_nomad(out: dict[str, Any]) -> None:
    s = out["nomad_step"]
    print(f"nomad_step (a deployment on every scale): crossing->decision "
          f"{s['decision_after_crossing_s']} s (interval {s['evaluation_interval_s']:g} s), "
          f"step->first new replica serving {s['step_to_serving_s']} s, scales "
          f"{s['scale_posts']}, {s['not_ready_ticks']} not-ready ticks, "
          f"{s['refused_by_nomad']} refused by Nomad")
    for key in ("nomad_full", "nomad_full_without_release"):
        r = out[key]
        print(f"{key}: capacity noticed {r['noticed_after_scale_up_intervals']} interval(s) after "
              f"the scale-up; after the load drop scalable in {r['scalable_after_drop_s']} s, "
              f"first down decision {r['first_down_decision_after_drop_s']} s, scaled down "
              f"{r['scale_down_after_drop_s']} s; scales {r['scale_posts']}")
    r = out["nomad_steady_edge"]
    print(f"nomad_steady_edge: {r['rate_req_s']:g} req/s for {r['hours']:g} h: "
          f"{len(r['scale_posts'])} scale actions, {r['direction_changes']} direction changes, "
          f"{r['deployments']} deployments, final replicas {r['final_replicas']}")


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
        "policy": _policy().model_dump(mode="json", exclude={"checks"}),
        **results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    _print(results)
    _print_nomad(results)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
