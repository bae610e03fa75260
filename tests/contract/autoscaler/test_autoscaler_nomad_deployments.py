"""The autoscaler (real PolicyHandler + NomadScaleTarget) against the Nomad fake, with the
rendered job of examples/platform.yaml: every scale starts a deployment, and a full
cluster cannot place a scale-up. Time is the fake's clock, one tick per evaluation
interval (10 s); the load is a stub answering the check's query."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import nomad
import pytest
from prometheus_client import CollectorRegistry
from tests.fakes.nomad import FakeNomad

from caravan.autoscaler.handler import PolicyHandler, ScalingDecision
from caravan.autoscaler.metrics import AutoscalerMetrics
from caravan.autoscaler.nomad import NomadScaleTarget
from caravan.nomad.job_json import job_request
from caravan.nomad.triton_job import triton_job
from caravan.spec import load_spec
from caravan.spec.autoscaling import policy_for

SPEC = load_spec("examples/platform.yaml")
MODEL = SPEC.models[0]  # llama-3-8b: replicas 1..4, initial 2, target 16 per replica
JOB = f"triton-{MODEL.name}"
INTERVAL = 10.0


@dataclass
class Load:
    """In-flight demand the check reads (any query)."""

    value: float

    def query(self, promql: str) -> float:
        return self.value

    def query_range(self, promql: str, start: float, end: float,
                    step_s: float) -> list[tuple[float, float]]:
        n = int((end - start) // step_s) + 1
        return [(start + i * step_s, self.value) for i in range(n)]


@dataclass
class Run:
    fake: FakeNomad
    load: Load
    handler: PolicyHandler
    registry: CollectorRegistry

    def tick(self) -> ScalingDecision:
        self.fake.advance(INTERVAL)
        return self.handler.tick()

    def ticks(self, n: int) -> list[ScalingDecision]:
        return [self.tick() for _ in range(n)]

    def scale_posts(self) -> list[int]:
        return [r.body["Count"] for r in self.fake.requests
                if r.method == "POST" and r.path == f"/v1/job/{JOB}/scale"]

    def job(self) -> dict[str, Any]:
        job = self.fake.job(JOB)
        assert job is not None
        return job

    def gauge(self, name: str) -> float | None:
        return self.registry.get_sample_value(name, {"model": MODEL.name})


def _run(fake: FakeNomad, load_s: float = 60.0) -> Run:
    client = nomad.Nomad(address=fake.address, timeout=5)
    fake.set_model_load(JOB, load_s)
    client.jobs.register_job(job_request(triton_job(SPEC, MODEL)))
    fake.advance(load_s + 31)  # the first deployment succeeds: 2 healthy replicas
    policy = policy_for(MODEL)
    assert policy is not None
    registry = CollectorRegistry()
    target = NomadScaleTarget(client, {MODEL.name: (JOB, "triton")}, clock=fake.clock)
    load = Load(20.0)
    handler = PolicyHandler(policy, load, target, clock=fake.clock,
                            exporter=AutoscalerMetrics(registry))
    return Run(fake, load, handler, registry)


@pytest.fixture
def roomy() -> Iterator[Run]:
    with FakeNomad(gpu_nodes=[8]) as fake:
        yield _run(fake)


@pytest.fixture
def full() -> Iterator[Run]:
    """The cluster has exactly the two GPUs the running replicas use."""
    with FakeNomad(gpu_nodes=[2]) as fake:
        yield _run(fake)


def test_every_scale_starts_a_deployment_and_decisions_resume_after_it(roomy: Run) -> None:
    roomy.load.value = 60.0  # wants 4
    first = roomy.tick()
    assert (first.action, first.desired) == ("scaled", 4)
    assert roomy.fake.deployments(JOB)[0]["Status"] == "running"
    during = roomy.ticks(9)  # 60 s load + 30 s min_healthy_time
    assert [d.action for d in during] == ["not-ready"] * 8 + ["none"]
    assert roomy.fake.deployments(JOB)[0]["Status"] == "successful"
    roomy.load.value = 10.0  # wants 1: down once the check's 30 s window has seen it
    assert "stabilizing" in [d.action for d in roomy.ticks(3)]
    actions = [d.action for d in roomy.ticks(31)]
    assert "scaled" in actions
    assert actions[actions.index("scaled") + 1] == "not-ready"  # a scale-down deploys too
    posts = roomy.scale_posts()
    assert posts[0] == 4 and len(posts) == 2 and posts[1] < 4
    assert roomy.job()["TaskGroups"][0]["Count"] == posts[1]


def test_a_full_cluster_is_noticed_released_and_does_not_lock_the_group(full: Run) -> None:
    full.load.value = 60.0
    assert full.tick().action == "scaled"
    assert full.fake.deployments(JOB)[0]["Status"] == "running"
    noticed = full.tick()  # within two evaluation intervals of the scale
    assert noticed.action == "capacity" and "capacity exhausted" in noticed.reason
    assert "devices: no devices match request" in noticed.reason
    assert "2 of 4 placed" in noticed.reason
    failed = full.fake.deployments(JOB)[1]
    assert failed["StatusDescription"].startswith("Deployment marked as failed - rolling back")
    assert full.job()["TaskGroups"][0]["Count"] == 2
    assert full.gauge("caravan_autoscaler_capacity_exhausted") == 1.0
    held = full.ticks(30)  # 5 minutes of the same high load
    assert {d.action for d in held} <= {"not-ready", "capacity"}
    assert held[-1].action == "capacity" and "held at 2" in held[-1].reason
    assert full.scale_posts() == [4], "the unplaceable count is not asked again"
    full.load.value = 10.0  # load drops: scale-down is possible (after the 30 s window)
    assert "stabilizing" in [d.action for d in full.ticks(3)]
    actions = [d.action for d in full.ticks(31)]
    assert "scaled" in actions and full.job()["TaskGroups"][0]["Count"] == 1
    assert full.scale_posts() == [4, 1]


def test_without_release_nomad_would_lock_the_group_for_the_progress_deadline(full: Run) -> None:
    """What Caravan avoids: the same stuck scale-up, left alone, blocks every scale (up and
    down) until Nomad fails the deployment 25 minutes after its last progress."""
    client = nomad.Nomad(address=full.fake.address, timeout=5)
    body = {"Count": 4, "Target": {"Group": "triton"}}
    client.job.request(JOB, "scale", json=body, method="post")
    full.fake.advance(1500 + 30)
    assert full.fake.deployments(JOB)[0]["Status"] == "running"
    with pytest.raises(nomad.api.exceptions.BadRequestNomadException):
        client.job.request(JOB, "scale", json={**body, "Count": 1}, method="post")
    full.fake.advance(1)
    assert full.fake.deployments(JOB)[1]["StatusDescription"].startswith(
        "Failed due to progress deadline")


def test_allocations_stuck_pending_are_a_shortfall(roomy: Run) -> None:
    roomy.fake.set_task_start(JOB, None)  # e.g. an image that never pulls
    roomy.load.value = 60.0
    assert roomy.tick().action == "scaled"
    decisions = roomy.ticks(61)  # pending_deadline_s is 600 s
    capacity = [d for d in decisions if d.action == "capacity"]
    assert capacity and "allocation(s) pending for more than 600 s" in capacity[0].reason
    assert capacity[0].at - decisions[0].at <= 600 + 2 * INTERVAL
    assert roomy.job()["TaskGroups"][0]["Count"] == 2


def test_the_cluster_is_tried_again_after_the_backoff(full: Run) -> None:
    full.load.value = 60.0
    full.ticks(2)  # scaled, then noticed and released
    full.fake.set_gpu_nodes([8])
    full.ticks(59)  # inside capacity_backoff_s (600 s): held
    assert full.scale_posts() == [4]
    actions = [d.action for d in full.ticks(3)]
    assert "scaled" in actions and full.scale_posts() == [4, 4]
    assert full.job()["TaskGroups"][0]["Count"] == 4


def test_failed_retries_back_off_exponentially(full: Run) -> None:
    full.load.value = 60.0
    decisions = full.ticks(6 * 60 + 10)  # an hour of load the cluster cannot take
    ups = [d.at for d in decisions if d.action == "scaled"]
    gaps = [round(b - a) for a, b in itertools.pairwise(ups)]
    assert len(ups) == 3 and gaps[1] > gaps[0] >= 600, gaps


def test_a_drained_replica_loading_for_ten_minutes_becomes_healthy(roomy: Run) -> None:
    """The rendered ``migrate`` block covers the startup grace: a replacement placed outside
    a deployment (node drain) that loads for 10 min is healthy, not unhealthy for good."""
    roomy.fake.set_model_load(JOB, 600)
    roomy.fake.replace_allocations(JOB, "triton", 1)
    roomy.fake.advance(600 + 31)
    status = roomy.handler.target.status(MODEL.name)
    assert (status.running, status.starting) == (2, 0)


def test_a_stuck_scale_the_autoscaler_did_not_make_is_reported_not_released(full: Run) -> None:
    """An operator's ``nomad job scale`` (no caravan meta) the cluster cannot place: the
    autoscaler says so but leaves that deployment to Nomad."""
    client = nomad.Nomad(address=full.fake.address, timeout=5)
    client.job.request(JOB, "scale", json={"Count": 4, "Target": {"Group": "triton"}},
                       method="post")
    d = full.tick()
    assert d.action == "capacity" and "not the autoscaler's" in d.reason
    assert full.fake.deployments(JOB)[0]["Status"] == "running"
    assert full.job()["TaskGroups"][0]["Count"] == 4
