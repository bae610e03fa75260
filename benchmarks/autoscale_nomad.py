"""The autoscaling benchmark against the Nomad fake (``tests/fakes/nomad/``, loaded by
``fakes.load_fake``) on the simulated clock: the rendered job, ``NomadScaleTarget`` over
HTTP, and the ``Sim``'s serving replicas = the fake's allocations whose model has loaded.
Scenarios: nomad_step, nomad_full(_without_release), nomad_steady_edge (``autoscale.py``).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

from autoscale_sim import COOLDOWNS, Sim, signal_crossing, sim_policy

from caravan.autoscaler.handler import PolicyHandler, ScalingDecision
from caravan.autoscaler.nomad import NomadScaleTarget
from caravan.autoscaler.ports import TargetStatus
from caravan.nomad.job_json import job_request
from caravan.nomad.triton_job import job_id, triton_job
from caravan.spec import EngineArgs, ModelSpec, PlatformSpec, names
from caravan.spec.autoscaling import policy_for
from fakes import load_fake


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
    policy = sim_policy()
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
        cross = signal_crossing(run.sim, run.handler.policy, step_at)
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


def print_nomad(out: dict[str, Any]) -> None:
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
