"""The autoscaling benchmark's simulated cluster: a seeded fluid queueing model of LLM
replicas (``Sim``), which also answers the policy's PromQL and plays the scale target,
and the helpers that drive the real ``PolicyHandler`` against it. The model and its
scenarios are described in ``autoscale.py``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from caravan.autoscaler.handler import PolicyHandler, ScalingDecision
from caravan.autoscaler.ports import TargetStatus
from caravan.spec import EngineArgs, ModelSpec
from caravan.spec.autoscaling import ScalingPolicy, policy_for
from caravan.spec.strategy_params import LatencySlo, RequestsPerReplica

SERVICE_WINDOW_S = 300  # the 5 min of the llm_demand signal's service-time rates
COOLDOWNS = {"cooldown_up_s": 30, "cooldown_down_s": 60}  # as in examples/platform.yaml


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
        arrived = poisson(self.rng, rate)
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


def poisson(rng: random.Random, lam: float) -> int:
    """Knuth's method for small lambda, normal approximation above 30."""
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def sim_policy(check: dict[str, Any] | None = None, **over: Any) -> ScalingPolicy:
    raw: dict[str, Any] = {**COOLDOWNS, **over}
    if check is not None:
        raw["checks"] = [check]
    m = ModelSpec(
        name="llama", engine=EngineArgs(model="x"), replicas={"min": 1, "max": 8}, autoscaling=raw
    )
    p = policy_for(m)
    assert p is not None
    return p


def run_sim(sim: Sim, rates: list[float], policy: ScalingPolicy) -> list[ScalingDecision]:
    """Step the simulation second by second; tick the handler every evaluation interval."""
    handler = PolicyHandler(policy, sim, sim, clock=lambda: sim.t)
    every = round(policy.evaluation_interval_s)
    decisions = []
    for i, rate in enumerate(rates):
        sim.step(rate)
        if (i + 1) % every == 0:
            decisions.append(handler.tick())
    return decisions


def signal_crossing(sim: Sim, policy: ScalingPolicy, step_at: int) -> int | None:
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
