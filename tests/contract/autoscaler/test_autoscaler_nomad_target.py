"""NomadScaleTarget (python-nomad) against the faithful Nomad API fake."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import nomad
import pytest
from tests.fakes.nomad import FakeNomad

from caravan.autoscaler.nomad import NomadScaleTarget, group_status, placement_failure
from caravan.autoscaler.ports import NotReadyError, ScaleError

JOB = "triton-llama"


NS = 1_000_000_000
UPDATE = {"MaxParallel": 1, "MinHealthyTime": 30 * NS, "HealthyDeadline": 1200 * NS,
          "ProgressDeadline": 1500 * NS, "AutoRevert": True}


def _job(count: int = 1) -> dict[str, Any]:
    return {
        "ID": JOB,
        "Name": JOB,
        "Type": "service",
        "Datacenters": ["dc1"],
        "TaskGroups": [
            {
                "Name": "triton",
                "Count": count,
                "Scaling": {"Min": 0, "Max": 4, "Enabled": True},
                "Update": UPDATE,
                "Tasks": [
                    {
                        "Name": "triton",
                        "Driver": "docker",
                        "Config": {"image": "x:1"},
                        "Resources": {"Devices": [{"Name": "nvidia/gpu", "Count": 1}]},
                    }
                ],
            }
        ],
    }


@pytest.fixture
def fake() -> Iterator[FakeNomad]:
    """Two serving replicas (first deployment done)."""
    with FakeNomad(token="s3cret") as f:
        client = nomad.Nomad(address=f.address, token="s3cret", timeout=5)
        client.jobs.register_job({"Job": _job(2)})
        f.advance(31)
        yield f


def _target(fake: FakeNomad, token: str = "s3cret") -> NomadScaleTarget:
    client = nomad.Nomad(address=fake.address, token=token, timeout=5)
    return NomadScaleTarget(client, {"llama": (JOB, "triton"), "ghost": ("nope", "triton")})


def test_status_reads_the_group(fake: FakeNomad) -> None:
    st = _target(fake).status("llama")
    assert (st.running, st.starting, st.desired, st.ready) == (2, 0, 2, True)


def test_scale_posts_count_group_message_and_meta(fake: FakeNomad) -> None:
    _target(fake).scale("llama", 3, "in-flight 52 > 2 x 16", {"caravan.direction": "up"})
    body = [r.body for r in fake.requests if r.method == "POST" and r.path.endswith("/scale")][-1]
    assert body == {
        "Count": 3,
        "Target": {"Group": "triton"},
        "Message": "in-flight 52 > 2 x 16",
        "Meta": {"caravan.direction": "up"},
    }
    assert fake.requests[-1].token == "s3cret"
    assert _target(fake).status("llama").desired == 3


def test_starting_allocations_count_as_capacity(fake: FakeNomad) -> None:
    fake.set_model_load(JOB, 90)
    _target(fake).scale("llama", 4, "r", {})
    fake.advance(31)  # the two in-place replicas are healthy again, two are loading
    st = _target(fake).status("llama")
    assert (st.running, st.starting, st.capacity) == (2, 2, 4)


def test_unhealthy_allocations_are_not_capacity(fake: FakeNomad) -> None:
    fake.set_model_load(JOB, None)
    _target(fake).scale("llama", 3, "r", {})
    fake.advance(1200)
    st = _target(fake).status("llama")
    assert (st.running, st.starting) == (2, 0)


def test_active_deployment_means_not_ready(fake: FakeNomad) -> None:
    t = _target(fake)
    t.scale("llama", 3, "r", {})
    st = t.status("llama")
    assert not st.ready and "running" in st.note
    with pytest.raises(NotReadyError, match="deployment"):
        t.scale("llama", 4, "r", {})
    fake.advance(31)
    assert t.status("llama").ready
    t.scale("llama", 4, "r", {})


@pytest.mark.parametrize(
    ("model", "count", "needle"),
    [
        ("llama", 9, "greater than scaling policy maximum"),
        ("ghost", 1, "not found"),
        ("other", 1, "no Nomad job configured"),
        ("llama", -1, "must be >= 0"),
    ],
    ids=["above-job-max", "unknown-job", "unknown-model", "negative"],
)
def test_scale_errors_are_clear(fake: FakeNomad, model: str, count: int, needle: str) -> None:
    with pytest.raises(ScaleError, match=needle) as info:
        _target(fake).scale(model, count, "r", {})
    assert not isinstance(info.value, NotReadyError)


def test_wrong_token_is_a_clear_error(fake: FakeNomad) -> None:
    with pytest.raises(ScaleError, match="permission denied"):
        _target(fake, token="wrong").status("llama")


def test_unreachable_nomad_is_a_scale_error() -> None:
    with FakeNomad() as f:
        address = f.address
    client = nomad.Nomad(address=address, timeout=2)
    with pytest.raises(ScaleError):
        NomadScaleTarget(client, {"m": (JOB, "triton")}).status("m")


def test_blocking_status_returns_on_change(fake: FakeNomad) -> None:
    t = _target(fake)
    _, index = t.blocking_status("llama", 0, 1)
    fake.set_model_load(JOB, 60)
    t.scale("llama", 3, "r", {})
    _, index = t.blocking_status("llama", 0, 1)
    timer = threading.Timer(0.3, lambda: fake.advance(31))
    timer.start()
    started = time.monotonic()
    st, new_index = t.blocking_status("llama", index, 5)
    timer.join()
    assert new_index > index and (st.running, st.starting) == (2, 1)
    assert time.monotonic() - started < 4


def test_missing_group_is_named() -> None:
    with pytest.raises(ScaleError, match="no task group 'web'"):
        group_status({"TaskGroups": {"triton": {}}}, JOB, "web")


class _Load:
    def __init__(self, value: float) -> None:
        self.value = value

    def query(self, promql: str) -> float:
        return self.value

    def query_range(self, promql: str, start: float, end: float,
                    step_s: float) -> list[tuple[float, float]]:
        return [(start, self.value), (end, self.value)]


def test_slow_model_load_does_not_over_scale(fake: FakeNomad) -> None:
    from caravan.autoscaler.handler import PolicyHandler
    from caravan.spec import EngineArgs, ModelSpec
    from caravan.spec.autoscaling import policy_for

    m = ModelSpec(
        name="llama",
        engine=EngineArgs(model="x"),
        replicas={"min": 1, "max": 4},
        autoscaling={
            "cooldown_up_s": 0,
            "checks": [
                {
                    "name": "load",
                    "query": "q",
                    "strategy": {"name": "requests-per-replica", "params": {"target": 10}},
                }
            ],
        },
    )
    policy = policy_for(m)
    assert policy is not None
    h = PolicyHandler(policy, _Load(35), _target(fake), clock=fake.clock)
    fake.set_model_load(JOB, 120)
    assert h.tick().action == "scaled"  # 2 -> 4
    actions = []
    for _ in range(10):  # load stays high while the new replicas load their weights
        fake.advance(10)
        d = h.tick()
        actions.append(d.action)
        assert d.current == 4
    assert set(actions) <= {"none", "not-ready"}
    scale_posts = [r for r in fake.requests if r.method == "POST" and r.path.endswith("/scale")]
    assert len(scale_posts) == 1 and scale_posts[0].body["Count"] == 4


FAILED = {"triton": {"DimensionExhausted": {"devices: no devices match request": 2},
                     "NodesEvaluated": 2}}


def _eval(index: int, status: str, job_index: int, failed: bool) -> dict[str, Any]:
    return {"ID": f"e{index}", "CreateIndex": index, "Status": status,
            "JobModifyIndex": job_index, "FailedTGAllocs": FAILED if failed else None}


@pytest.mark.parametrize(
    ("evals", "spec_index", "found"),
    [([_eval(1, "complete", 10, False), _eval(2, "complete", 12, True)], 12, True),
     ([_eval(2, "complete", 12, True), _eval(3, "complete", 12, False),
       _eval(4, "blocked", 12, True)], 12, False),
     ([_eval(2, "complete", 10, True), _eval(3, "pending", 12, False)], 12, False),
     ([_eval(2, "complete", 10, True)], None, True)],
    ids=["newest-complete-failed", "stale-blocked-eval-ignored", "older-version-ignored",
         "no-deployment"],
)
def test_placement_failure_reads_the_latest_attempt_of_the_deployed_version(
        evals: list[dict[str, Any]], spec_index: int | None, found: bool) -> None:
    reason = placement_failure(evals, "triton", spec_index)
    assert (reason is not None) is found
    if found:
        assert reason == "placement failed: devices: no devices match request (2 node(s))"
