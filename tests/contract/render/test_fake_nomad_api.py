"""The Nomad fake answers like Nomad (source-pinned, see tests/fakes/nomad/), through
python-nomad, the production client library: status codes, error texts, check order,
job versions, deployments, allocation health on the clock, placement failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import nomad
import pytest
from nomad.api import exceptions as nomad_exc
from tests.fakes.nomad import FakeNomad
from tests.fakes.nomad.api import NS

JOB = "triton-a"
UPDATE = {"MaxParallel": 1, "HealthCheck": "checks", "MinHealthyTime": 30 * NS,
          "HealthyDeadline": 1200 * NS, "ProgressDeadline": 1500 * NS, "AutoRevert": True}


def _job(count: int = 1, image: str = "x:1", update: bool = True, kill_s: int = 5,
         service: str = "triton-a", migrate_s: int | None = None) -> dict[str, Any]:
    group: dict[str, Any] = {
        "Name": "triton", "Count": count, "Scaling": {"Min": 0, "Max": 4, "Enabled": True},
        "Services": [{"Name": service, "PortLabel": "grpc",
                      "Checks": [{"Name": "grpc", "Type": "grpc", "Interval": 10 * NS,
                                  "Timeout": 3 * NS}]}],
        "Tasks": [{"Name": "tritonserver", "Driver": "docker", "KillTimeout": kill_s * NS,
                   "Config": {"image": image, "shm_size": 8589934592},
                   "Resources": {"CPU": 1000, "MemoryMB": 1024,
                                 "Devices": [{"Name": "nvidia/gpu", "Count": 1}]}}]}
    if update:
        group["Update"] = dict(UPDATE)
    if migrate_s is not None:
        group["Migrate"] = {"HealthyDeadline": migrate_s * NS, "MinHealthyTime": 30 * NS}
    return {"ID": JOB, "Name": JOB, "Type": "service", "Datacenters": ["dc1"],
            "TaskGroups": [group]}


@pytest.fixture
def fake() -> Iterator[FakeNomad]:
    with FakeNomad() as f:
        yield f


def _client(fake: FakeNomad, token: str | None = None) -> nomad.Nomad:
    return nomad.Nomad(address=fake.address, token=token, timeout=10)


def _status(fake: FakeNomad) -> dict[str, Any]:
    group: dict[str, Any] = _client(fake).job.request(JOB, "scale", method="get").json()[
        "TaskGroups"]["triton"]
    return group


def _scale(fake: FakeNomad, body: dict[str, Any]) -> Any:
    return _client(fake).job.request(JOB, "scale", json=body, method="post")


def _error(fn: Any, *args: Any) -> tuple[int, str]:
    with pytest.raises(nomad_exc.BaseNomadException) as info:
        fn(*args)
    return info.value.nomad_resp.status_code, info.value.nomad_resp.text


def _running(fake: FakeNomad, count: int = 2) -> None:
    """Register ``count`` replicas and let the first deployment succeed."""
    _client(fake).jobs.register_job({"Job": _job(count)})
    fake.advance(31)
    assert fake.deployments(JOB)[0]["Status"] == "successful"


# ---- register: versions, validation (500), EnforceIndex, PreserveCounts ------------------

def test_register_versions_and_canonical_defaults(fake: FakeNomad) -> None:
    n = _client(fake)
    answer = n.jobs.register_job({"Job": _job()})
    assert set(answer) >= {"EvalID", "EvalCreateIndex", "JobModifyIndex"}
    stored = n.job.get_job(JOB)
    assert (stored["Version"], stored["Region"], stored["Priority"]) == (0, "global", 50)
    assert stored["TaskGroups"][0]["Migrate"]["HealthyDeadline"] == 300 * NS  # default migrate
    n.jobs.register_job({"Job": _job(count=2)})
    assert n.job.get_job(JOB)["Version"] == 1
    n.jobs.register_job({"Job": _job(count=2)})  # same spec: an eval, no new version
    assert n.job.get_job(JOB)["Version"] == 1


@pytest.mark.parametrize(
    ("job", "body"),
    [(_job(count=-1),
      "1 error occurred:\n\t* Task group triton validation failed: 2 errors occurred:\n"
      "\t* Task group count can't be negative\n\t* Task group scaling policy validation "
      "failed: 1 error occurred:\n\t* Scaling policy invalid: task group count must not be "
      "less than minimum count in scaling policy\n\n\n\n\n\n"),
     (_job(kill_s=3600),
      "1 error occurred:\n\t* Task group triton validation failed: 1 error occurred:\n\t* Task "
      "tritonserver validation failed: 1 error occurred:\n\t* KillTimout (1h0m0s) longer than "
      "the group's ProgressDeadline (25m0s)\n\n\n\n\n\n"),
     (_job(service="triton-" + "m" * 57),
      "1 error occurred:\n\t* Task group triton validation failed: 1 error occurred:\n\t* Task "
      "group service validation failed: 1 error occurred:\n\t* Service[0] triton-" + "m" * 57
      + " validation failed: 1 error occurred:\n\t* Service name must be valid per RFC 1123 and "
      "can contain only alphanumeric characters or dashes and must be no longer than 63 "
      'characters: "triton-' + "m" * 57 + '"\n\n\n\n\n\n\n\n'),
     ({"ID": "x", "Name": "x", "Datacenters": ["dc1"]},
      "1 error occurred:\n\t* Missing job task groups\n\n"),
     ({**_job(), "ID": "a b", "Name": "a b"}, "1 error occurred:\n\t* Job ID contains a space\n\n")],
    ids=["negative-count", "kill-timeout-over-progress-deadline", "service-name-64-chars",
         "no-groups", "space-in-id"],
)
def test_invalid_job_is_500_with_nomads_multierror(fake: FakeNomad, job: dict[str, Any],
                                                   body: str) -> None:
    """Validation errors are plain errors, so Nomad's HTTP layer answers 500 (not 400)."""
    assert _error(_client(fake).jobs.register_job, {"Job": job}) == (500, body)
    assert _error(_client(fake).job.plan_job, job["ID"], {"Job": job}) == (500, body)


@pytest.mark.parametrize(
    ("job", "message"),
    [({"Name": "x"}, "Job ID hasn't been provided"), (None, "Job must be specified")],
    ids=["no-id", "no-job"],
)
def test_malformed_register_is_400(fake: FakeNomad, job: Any, message: str) -> None:
    assert _error(_client(fake).jobs.register_job, {"Job": job}) == (400, message)


def test_enforce_index_conflicts_are_500(fake: FakeNomad) -> None:
    n = _client(fake)
    index = n.jobs.register_job({"Job": _job(), "EnforceIndex": True})["JobModifyIndex"]
    stale = {"Job": _job(count=2), "EnforceIndex": True, "JobModifyIndex": index - 1}
    assert _error(n.jobs.register_job, stale) == (
        500, f"Enforcing job modify index {index - 1}: job exists with conflicting job modify "
             f"index: {index}")
    fresh = {"Job": _job(count=2), "EnforceIndex": True, "JobModifyIndex": 0}
    assert _error(n.jobs.register_job, fresh) == (
        500, "Enforcing job modify index 0: job already exists")
    n.jobs.register_job({"Job": _job(count=2), "EnforceIndex": True, "JobModifyIndex": index})
    assert n.job.get_job(JOB)["TaskGroups"][0]["Count"] == 2


def test_preserve_counts_keeps_the_stored_count_but_still_makes_a_version(
        fake: FakeNomad) -> None:
    """``updatePreservedValues`` runs after the spec-changed test: a count-only register
    with PreserveCounts still writes a new version (so Caravan does not send one)."""
    _running(fake, 2)
    _scale(fake, {"Count": 3, "Target": {"Group": "triton"}})
    fake.advance(31)
    n = _client(fake)
    n.jobs.register_job({"Job": _job(count=2, image="x:2"), "PreserveCounts": True})
    stored = n.job.get_job(JOB)
    assert stored["TaskGroups"][0]["Count"] == 3
    assert stored["TaskGroups"][0]["Tasks"][0]["Config"]["image"] == "x:2"
    version = stored["Version"]
    n.jobs.register_job({"Job": _job(count=2, image="x:2"), "PreserveCounts": True})
    assert n.job.get_job(JOB)["Version"] == version + 1


# ---- plan: nested diff, annotations, placement failures --------------------------------------

def test_plan_reports_added_then_none_then_edited(fake: FakeNomad) -> None:
    n = _client(fake)
    plan = n.job.plan_job(JOB, {"Job": _job(count=2)}, diff=True)
    assert plan["Diff"]["Type"] == "Added" and plan["JobModifyIndex"] == 0
    assert plan["Annotations"]["DesiredTGUpdates"]["triton"]["Place"] == 2
    assert fake.job(JOB) is None, "plan must not register"
    n.jobs.register_job({"Job": _job(count=2)})
    assert n.job.plan_job(JOB, {"Job": _job(count=2)}, diff=True)["Diff"]["Type"] == "None"
    edited = n.job.plan_job(JOB, {"Job": _job(count=3)}, diff=True)
    assert edited["JobModifyIndex"] == n.job.get_job(JOB)["JobModifyIndex"]
    group = edited["Diff"]["TaskGroups"][0]
    assert {"Type": "Edited", "Name": "Count", "Old": "2", "New": "3",
            "Annotations": ["forces create"]} in group["Fields"]
    assert group["Updates"] == {"create": 1, "in-place update": 2}


def test_plan_nests_task_changes_under_the_group(fake: FakeNomad) -> None:
    """An image bump is a ``Config`` object of the task, not a group field."""
    n = _client(fake)
    n.jobs.register_job({"Job": _job(count=2)})
    plan = n.job.plan_job(JOB, {"Job": _job(count=2, image="x:2")}, diff=True)
    group = plan["Diff"]["TaskGroups"][0]
    assert group["Fields"] is None or group["Fields"] == []
    task = group["Tasks"][0]
    assert (task["Type"], task["Name"], task["Annotations"]) == (
        "Edited", "tritonserver", ["forces create/destroy update"])
    config = next(o for o in task["Objects"] if o["Name"] == "Config")
    assert {"Type": "Edited", "Name": "image", "Old": "x:1", "New": "x:2",
            "Annotations": None} in config["Fields"]
    assert {"Type": "None", "Name": "shm_size", "Old": "8.589934592e+09",
            "New": "8.589934592e+09", "Annotations": None} in config["Fields"]
    # max_parallel 1: one replacement now, the other waits
    assert group["Updates"] == {"create/destroy update": 1, "ignore": 1}


def test_plan_shows_placement_failures_on_a_full_cluster() -> None:
    with FakeNomad(gpu_nodes=[1]) as fake:
        plan = _client(fake).job.plan_job(JOB, {"Job": _job(count=2)}, diff=True)
        failed = plan["FailedTGAllocs"]["triton"]
    assert failed["DimensionExhausted"] == {"devices: no devices match request": 1}
    assert failed["CoalescedFailures"] == 0


# ---- scale: order of checks, deployments, events ------------------------------------------------

@pytest.mark.parametrize(
    ("body", "answer"),
    [({"Count": 1, "Target": {}}, (400, "missing task group name for scaling action")),
     ({"Count": -1, "Target": {"Group": "triton"}},
      (400, "scaling action count can't be negative")),
     ({"Count": 2, "Error": True, "Target": {"Group": "triton"}},
      (400, "scaling action should not contain count if error is true")),
     ({"Count": 1, "Target": {"Group": "nope"}},
      (400, 'task group "nope" specified for scaling does not exist in job')),
     ({"Count": 9, "Target": {"Group": "triton"}},
      (400, "group count was greater than scaling policy maximum: 9 > 4")),
     ({"Count": 1, "Target": {"Group": "triton", "Job": "other"}},
      (400, "job ID in payload did not match URL"))],
    ids=["no-group", "negative", "error-with-count", "unknown-group", "above-max", "job-mismatch"],
)
def test_scale_rejects_bad_requests(fake: FakeNomad, body: dict[str, Any],
                                    answer: tuple[int, str]) -> None:
    _client(fake).jobs.register_job({"Job": _job()})
    assert _error(_scale, fake, body) == answer


def test_scale_unknown_job_is_404(fake: FakeNomad) -> None:
    assert _error(_scale, fake, {"Count": 1, "Target": {"Group": "triton"}}) == (
        404, f'job "{JOB}" not found')


def test_scale_starts_a_deployment_that_blocks_scaling_until_it_ends(fake: FakeNomad) -> None:
    _running(fake, 2)
    answer = _scale(fake, {"Count": 3, "Target": {"Group": "triton"}, "Message": "deep"}).json()
    assert answer["EvalID"] and answer["JobModifyIndex"]
    latest = _client(fake).job.get_deployment(JOB)
    assert (latest["Status"], latest["JobVersion"]) == ("running", 1)
    assert latest["TaskGroups"]["triton"]["DesiredTotal"] == 3  # 2 in place + 1 new
    # in-place updated replicas lost their health: all three are starting
    assert _status(fake) | {"Events": None} == {"Desired": 3, "Placed": 3, "Running": 3,
                                                "Healthy": 0, "Unhealthy": 0, "Events": None}
    for count in (4, 1):  # up and down alike
        assert _error(_scale, fake, {"Count": count, "Target": {"Group": "triton"}}) == (
            400, "job scaling blocked due to active deployment")
    # the bounds are checked before the deployment
    assert _error(_scale, fake, {"Count": 9, "Target": {"Group": "triton"}})[0] == 400
    assert "maximum" in _error(_scale, fake, {"Count": 9, "Target": {"Group": "triton"}})[1]
    fake.advance(29)
    assert _client(fake).job.get_deployment(JOB)["Status"] == "running"
    fake.advance(2)
    assert _client(fake).job.get_deployment(JOB)["Status"] == "successful"
    assert _client(fake).job.get_job(JOB)["Stable"] is True
    _scale(fake, {"Count": 1, "Target": {"Group": "triton"}})
    event = _status(fake)["Events"][0]
    assert (event["Count"], event["PreviousCount"]) == (1, 3)


def test_a_deployment_links_to_the_scale_by_job_modify_index_not_eval_deployment_id(
        fake: FakeNomad) -> None:
    """``Evaluation.DeploymentID`` is the deployment that *triggered* an eval (the
    watcher's); the scale's own eval and its deployment share the ``JobModifyIndex``."""
    _running(fake, 2)
    answer = _scale(fake, {"Count": 3, "Target": {"Group": "triton"}}).json()
    evals = {e["ID"]: e for e in _client(fake).job.get_evaluations(JOB)}
    scale_eval = evals[answer["EvalID"]]
    dep = _client(fake).job.get_deployment(JOB)
    assert scale_eval["DeploymentID"] == ""
    assert scale_eval["JobModifyIndex"] == dep["JobSpecModifyIndex"] == answer["JobModifyIndex"]
    fake.advance(31)
    watcher = [e for e in _client(fake).job.get_evaluations(JOB)
               if e["TriggeredBy"] == "deployment-watcher"]
    assert watcher and all(e["DeploymentID"] for e in watcher)


def test_scale_without_count_records_an_event_only(fake: FakeNomad) -> None:
    _running(fake, 2)
    answer = _scale(fake, {"Target": {"Group": "triton"}, "Error": True,
                           "Message": "capacity exhausted"}).json()
    assert answer["EvalID"] == ""
    event = _status(fake)["Events"][0]
    assert (event["Error"], event["Message"], event["Count"]) == (True, "capacity exhausted", None)
    assert _client(fake).job.get_job(JOB)["Version"] == 0


def test_scale_with_a_stale_job_modify_index_is_500(fake: FakeNomad) -> None:
    _running(fake, 2)
    assert _error(_scale, fake, {"Count": 3, "Target": {"Group": "triton"},
                                 "JobModifyIndex": 1})[0] == 500


# ---- allocation health on the clock ---------------------------------------------------------------

def test_a_slow_model_load_is_healthy_after_load_plus_min_healthy_time(fake: FakeNomad) -> None:
    fake.set_model_load(JOB, 90)
    _client(fake).jobs.register_job({"Job": _job(1)})
    fake.advance(119)
    assert (_status(fake)["Running"], _status(fake)["Healthy"]) == (1, 0)
    fake.advance(1)
    assert _status(fake)["Healthy"] == 1


def test_a_model_that_never_loads_turns_unhealthy_at_the_healthy_deadline(
        fake: FakeNomad) -> None:
    fake.set_model_load(JOB, None)
    _client(fake).jobs.register_job({"Job": _job(1)})
    fake.advance(1199)
    assert (_status(fake)["Healthy"], _status(fake)["Unhealthy"]) == (0, 0)
    fake.advance(1)
    assert _status(fake)["Unhealthy"] == 1


def test_pending_allocations_are_placed_but_not_running(fake: FakeNomad) -> None:
    fake.set_task_start(JOB, None)
    _client(fake).jobs.register_job({"Job": _job(2)})
    fake.advance(600)
    assert (_status(fake)["Placed"], _status(fake)["Running"]) == (2, 0)


@pytest.mark.parametrize(("migrate_s", "healthy"), [(None, False), (1500, True)],
                         ids=["default-migrate-5m", "migrate-covers-the-load"])
def test_replacements_outside_a_deployment_follow_the_migrate_block(
        fake: FakeNomad, migrate_s: int | None, healthy: bool) -> None:
    """A drained replica's replacement is judged by ``migrate`` (default 5 min deadline)."""
    _client(fake).jobs.register_job({"Job": _job(1, migrate_s=migrate_s)})
    fake.advance(31)
    fake.set_model_load(JOB, 600)
    fake.replace_allocations(JOB, "triton", 1)
    fake.advance(700)
    assert (_status(fake)["Healthy"], _status(fake)["Unhealthy"]) == (int(healthy),
                                                                      int(not healthy))


# ---- a full cluster: failed placements, blocked evals, progress deadline, auto-revert ------------

def test_unplaceable_scale_up_blocks_then_fails_at_the_progress_deadline_and_reverts() -> None:
    with FakeNomad(gpu_nodes=[2]) as fake:
        _running(fake, 2)
        _scale(fake, {"Count": 4, "Target": {"Group": "triton"}})
        assert (_status(fake)["Desired"], _status(fake)["Placed"]) == (4, 2)
        evals = _client(fake).job.get_evaluations(JOB)
        failed = [e for e in evals if e["FailedTGAllocs"]]
        assert failed and failed[-1]["FailedTGAllocs"]["triton"]["DimensionExhausted"] == {
            "devices: no devices match request": 1}
        assert any(e["Status"] == "blocked" for e in evals)
        fake.advance(31)  # the two in-place replicas are healthy again: progress
        for count in (2, 3):
            assert _error(_scale, fake, {"Count": count, "Target": {"Group": "triton"}})[0] == 400
        fake.advance(1500 - 1)
        assert _client(fake).job.get_deployment(JOB)["Status"] == "running"
        fake.advance(1)
        failed_dep = fake.deployments(JOB)[1]
        assert failed_dep["StatusDescription"] == (
            "Failed due to progress deadline - rolling back to job version 0")
        job = _client(fake).job.get_job(JOB)
        assert (job["Version"], job["TaskGroups"][0]["Count"]) == (2, 2)


def test_failing_a_deployment_reverts_at_once() -> None:
    with FakeNomad(gpu_nodes=[2]) as fake:
        _running(fake, 2)
        _scale(fake, {"Count": 4, "Target": {"Group": "triton"}})
        dep = _client(fake).job.get_deployment(JOB)
        answer = _client(fake).deployment.fail_deployment(dep["ID"])
        assert answer["RevertedJobVersion"] == 0
        assert fake.deployments(JOB)[1]["StatusDescription"] == (
            "Deployment marked as failed - rolling back to job version 0")
        assert _client(fake).job.get_job(JOB)["TaskGroups"][0]["Count"] == 2
        assert _error(_client(fake).deployment.fail_deployment, dep["ID"]) == (
            500, "can't fail terminal deployment")


def test_new_capacity_unblocks_the_placement() -> None:
    with FakeNomad(gpu_nodes=[2]) as fake:
        _running(fake, 2)
        _scale(fake, {"Count": 3, "Target": {"Group": "triton"}})
        fake.set_gpu_nodes([2, 8])
        assert _status(fake)["Placed"] == 3
        fake.advance(31)
        assert _client(fake).job.get_deployment(JOB)["Status"] == "successful"


# ---- blocking queries, ACLs, 404 ---------------------------------------------------------------------

def test_scale_status_blocking_query_returns_on_change(fake: FakeNomad) -> None:
    n = _client(fake)
    n.jobs.register_job({"Job": _job(count=2)})
    first = n.job.request(JOB, "scale", method="get")
    index = int(first.headers["X-Nomad-Index"])
    timer = threading.Timer(0.2, lambda: fake.advance(31))
    timer.start()
    started = time.monotonic()
    answer = n.job.request(JOB, "scale", method="get", params={"index": index, "wait": "5s"})
    timer.join()
    assert time.monotonic() - started < 4.5
    assert int(answer.headers["X-Nomad-Index"]) > index
    assert answer.json()["TaskGroups"]["triton"]["Healthy"] == 2


def test_blocking_query_times_out_with_same_index(fake: FakeNomad) -> None:
    n = _client(fake)
    n.jobs.register_job({"Job": _job()})
    index = int(n.job.request(JOB, "scale", method="get").headers["X-Nomad-Index"])
    answer = n.job.request(JOB, "scale", method="get", params={"index": index, "wait": "100ms"})
    assert int(answer.headers["X-Nomad-Index"]) == index


def test_acl_token_is_required_when_configured() -> None:
    with FakeNomad(token="s3cret") as fake:
        with pytest.raises(nomad_exc.URLNotAuthorizedNomadException) as info:
            _client(fake).jobs.register_job({"Job": _job()})
        assert info.value.nomad_resp.text == "Permission denied"
        _client(fake, token="s3cret").jobs.register_job({"Job": _job()})
        assert fake.requests[-1].token == "s3cret"


def test_unknown_job_is_404(fake: FakeNomad) -> None:
    with pytest.raises(nomad_exc.URLNotFoundNomadException) as info:
        _client(fake).job.get_job("missing")
    assert info.value.nomad_resp.text == "job not found"
