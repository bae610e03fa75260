"""The Nomad fake, exercised through python-nomad (the production client library)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import nomad
import pytest
from nomad.api import exceptions as nomad_exc
from tests.fakes.nomad import FakeNomad


def _job(job_id: str = "triton-a", count: int = 1) -> dict[str, Any]:
    return {"ID": job_id, "Name": job_id, "Type": "service", "Datacenters": ["dc1"],
            "TaskGroups": [{"Name": "triton", "Count": count,
                            "Scaling": {"Min": 0, "Max": 4, "Enabled": True},
                            "Tasks": [{"Name": "triton", "Driver": "docker",
                                       "Config": {"image": "x:1"}}]}]}


@pytest.fixture
def fake() -> Iterator[FakeNomad]:
    with FakeNomad() as f:
        yield f


def _client(fake: FakeNomad, token: str | None = None) -> nomad.Nomad:
    return nomad.Nomad(address=fake.address, token=token, timeout=10)


def test_register_then_get_returns_stored_job(fake: FakeNomad) -> None:
    n = _client(fake)
    answer = n.jobs.register_job({"Job": _job()})
    assert set(answer) >= {"EvalID", "EvalCreateIndex", "JobModifyIndex"}
    stored = n.job.get_job("triton-a")
    assert stored["Version"] == 0 and stored["TaskGroups"][0]["Count"] == 1
    n.jobs.register_job({"Job": _job(count=2)})
    assert n.job.get_job("triton-a")["Version"] == 1


@pytest.mark.parametrize(
    ("job", "message"),
    [({"Name": "x", "TaskGroups": _job()["TaskGroups"]}, "Missing job ID"),
     ({"ID": "x", "Name": "x"}, "Missing job task groups"),
     (_job(count=-1), "count can't be negative"),
     ({"ID": "a b", "Name": "a b", "TaskGroups": _job()["TaskGroups"]}, "contains a space")],
    ids=["no-id", "no-groups", "negative-count", "space-in-id"],
)
def test_invalid_job_is_400(fake: FakeNomad, job: dict[str, Any], message: str) -> None:
    with pytest.raises(nomad_exc.BadRequestNomadException) as info:
        _client(fake).jobs.register_job({"Job": job})
    assert message in info.value.nomad_resp.text


def test_plan_reports_added_then_none_then_edited(fake: FakeNomad) -> None:
    n = _client(fake)
    plan = n.job.plan_job("triton-a", {"Job": _job(count=2)}, diff=True)
    assert plan["Diff"]["Type"] == "Added"
    assert plan["Annotations"]["DesiredTGUpdates"]["triton"]["Place"] == 2
    assert fake.job("triton-a") is None, "plan must not register"
    n.jobs.register_job({"Job": _job(count=2)})
    assert n.job.plan_job("triton-a", {"Job": _job(count=2)}, diff=True)["Diff"]["Type"] == "None"
    edited = n.job.plan_job("triton-a", {"Job": _job(count=3)}, diff=True)
    assert edited["Diff"]["Type"] == "Edited"
    fields = edited["Diff"]["TaskGroups"][0]["Fields"]
    assert {"Type": "Edited", "Name": "Count", "Old": "2", "New": "3"} in fields


def test_scale_changes_count_and_records_event(fake: FakeNomad) -> None:
    n = _client(fake)
    n.jobs.register_job({"Job": _job()})
    body = {"Count": 3, "Target": {"Group": "triton"}, "Message": "queue deep"}
    answer = n.job.request("triton-a", "scale", json=body, method="post").json()
    assert set(answer) >= {"EvalID", "EvalCreateIndex", "JobModifyIndex"}
    status = n.job.request("triton-a", "scale", method="get").json()
    group = status["TaskGroups"]["triton"]
    assert (group["Desired"], group["Running"], group["Healthy"]) == (3, 3, 3)
    event = group["Events"][0]
    assert (event["Message"], event["PreviousCount"], event["Count"]) == ("queue deep", 1, 3)


@pytest.mark.parametrize(
    ("body", "message"),
    [({"Count": 9, "Target": {"Group": "triton"}}, "greater than scaling policy maximum"),
     ({"Count": -1, "Target": {"Group": "triton"}}, "can't be negative"),
     ({"Count": 1, "Target": {"Group": "nope"}}, "does not exist")],
    ids=["above-max", "negative", "unknown-group"],
)
def test_scale_rejects_bad_requests(fake: FakeNomad, body: dict[str, Any], message: str) -> None:
    n = _client(fake)
    n.jobs.register_job({"Job": _job()})
    with pytest.raises(nomad_exc.BadRequestNomadException) as info:
        n.job.request("triton-a", "scale", json=body, method="post")
    assert message in info.value.nomad_resp.text


def test_scale_is_400_during_active_deployment(fake: FakeNomad) -> None:
    n = _client(fake)
    n.jobs.register_job({"Job": _job()})
    fake.start_deployment("triton-a")
    body = {"Count": 2, "Target": {"Group": "triton"}}
    with pytest.raises(nomad_exc.BadRequestNomadException) as info:
        n.job.request("triton-a", "scale", json=body, method="post")
    assert "active deployment" in info.value.nomad_resp.text
    fake.finish_deployment("triton-a")
    n.job.request("triton-a", "scale", json=body, method="post")
    assert fake.job("triton-a")["TaskGroups"][0]["Count"] == 2  # type: ignore[index]


def test_scale_status_blocking_query_returns_on_change(fake: FakeNomad) -> None:
    n = _client(fake)
    n.jobs.register_job({"Job": _job(count=2)})
    fake.auto_allocate = False
    first = n.job.request("triton-a", "scale", method="get")
    index = int(first.headers["X-Nomad-Index"])
    timer = threading.Timer(0.2, lambda: fake.set_allocations(
        "triton-a", "triton", placed=2, running=1, healthy=1))
    timer.start()
    started = time.monotonic()
    answer = n.job.request("triton-a", "scale", method="get",
                           params={"index": index, "wait": "5s"})
    timer.join()
    assert time.monotonic() - started < 4.5
    assert int(answer.headers["X-Nomad-Index"]) > index
    assert answer.json()["TaskGroups"]["triton"]["Running"] == 1


def test_blocking_query_times_out_with_same_index(fake: FakeNomad) -> None:
    n = _client(fake)
    n.jobs.register_job({"Job": _job()})
    index = int(n.job.request("triton-a", "scale", method="get").headers["X-Nomad-Index"])
    answer = n.job.request("triton-a", "scale", method="get",
                           params={"index": index, "wait": "100ms"})
    assert int(answer.headers["X-Nomad-Index"]) == index


def test_acl_token_is_required_when_configured() -> None:
    with FakeNomad(token="s3cret") as fake:
        with pytest.raises(nomad_exc.URLNotAuthorizedNomadException):
            _client(fake).jobs.register_job({"Job": _job()})
        _client(fake, token="s3cret").jobs.register_job({"Job": _job()})
        assert fake.requests[-1].token == "s3cret"


def test_unknown_job_is_404(fake: FakeNomad) -> None:
    with pytest.raises(nomad_exc.URLNotFoundNomadException):
        _client(fake).job.get_job("missing")
