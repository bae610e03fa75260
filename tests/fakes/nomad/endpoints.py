"""The fake Nomad's job endpoints: register, plan, scale, scale status, fail a deployment.

The HTTP handler (``server``) routes to these, with Nomad's status codes, texts and
check order.

Endpoints (``command/agent/job_endpoint.go`` unless noted)
  POST /v1/jobs, /v1/job/:id   ``jobUpdate`` then ``nomad/job_endpoint.go`` ``Job.Register``
      -> ``doRegister``: 400 "Job must be specified" / "Job ID hasn't been provided" /
      "Job ID does not match name"; admission validation (``validation.validation_error``)
      and ``Job.EnforceIndex`` conflicts are plain errors, so **HTTP 500** (only
      ``RPCCodedErr``/``CodedError`` become 4xx: ``command/agent/http.go`` ``wrap``);
      an unchanged spec creates an eval but no version (``multiregionSpecChanged``);
      ``PreserveCounts`` keeps the stored counts (``state_store.go``
      ``updatePreservedValues``, applied *after* the spec-changed test).
  POST /v1/job/:id/plan          ``jobPlan`` -> ``Job.Plan``: same validation (500), a dry-run
      of the reconciler, ``Diff`` from ``diff.job_diff`` annotated like
      ``scheduler/annotate.go``, ``JobModifyIndex`` of the stored job (0 if none),
      ``FailedTGAllocs`` when the cluster cannot place. Plans have no PreserveCounts.
  GET  /v1/job/:id               the stored job (Version, Stable, JobModifyIndex ...); 404
      "job not found".
  POST /v1/job/:id/scale         ``jobScaleAction`` -> ``Job.Scale``, in its order:
      ``JobScaleRequest.Validate`` (400 missing group, negative count, ``Error`` with a
      count), 404 ``job "x" not found``, 400 unknown group, 400 scaling bounds, 400
      "job scaling blocked due to active deployment", 500 on a ``JobModifyIndex``
      conflict; a count bumps the job version (a register with EnforceIndex) and returns
      the eval; every call records a scaling event (newest first, 20 kept).
  GET  /v1/job/:id/scale         ``Job.ScaleStatus``: Desired = count; Placed = non-terminal
      allocations; Running = client status running; Healthy/Unhealthy from each
      allocation's DeploymentStatus. Blocking query (``index``, ``wait``).
  GET  /v1/job/:id/deployment    ``Job.LatestDeployment`` (null when none).
  GET  /v1/job/:id/evaluations, /allocations, GET /v1/deployment/:id
  POST /v1/deployment/fail/:id   ``nomad/deployment_endpoint.go`` ``Deployment.Fail`` ->
      ``deploymentwatcher.FailDeployment``: "Deployment marked as failed", auto-revert.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.fakes.nomad.api import NS, ApiError, Json, Key, rfc3339
from tests.fakes.nomad.diff import annotate, job_diff
from tests.fakes.nomad.jobspec import canonicalize, find_group, spec_changed
from tests.fakes.nomad.validation import validation_error
from tests.fakes.nomad.watcher import Watcher


class JobEndpoints(Watcher):
    """What each endpoint does, on the state. Callers hold ``_cond``."""

    token: str | None

    def _auth(self, token: str | None) -> None:
        if self.token is not None and token != self.token:
            raise ApiError(403, "Permission denied")

    def _stored(self, ns: str, job_id: str) -> Json:
        job = self._jobs.get((ns, job_id))
        if job is None:
            raise ApiError(404, "job not found")
        return job

    def register(self, query_ns: str | None, body: Any, path_id: str | None) -> Json:
        job = _body_job(body, "Job ID hasn't been provided")
        if path_id is not None and job["ID"] != path_id:
            raise ApiError(400, "Job ID does not match name")
        ns = query_ns or job.get("Namespace") or "default"
        job = canonicalize(job, ns)
        error = validation_error(job)
        if error:
            raise ApiError(500, error)
        key = (ns, job["ID"])
        old = self._jobs.get(key)
        if body.get("EnforceIndex"):
            _enforce_index(old, int(body.get("JobModifyIndex") or 0))
        if old is not None and old["Type"] != job["Type"]:
            raise ApiError(500, f'cannot update job from type "{old["Type"]}" to "{job["Type"]}"')
        if not spec_changed(old, job):
            assert old is not None
            ev = self._evaluate(key, "job-register")
            return _register_reply(ev, old["ModifyIndex"])
        if body.get("PreserveCounts") and old is not None:
            counts = {g["Name"]: g["Count"] for g in old["TaskGroups"]}
            for tg in job["TaskGroups"]:
                tg["Count"] = counts.get(tg["Name"], tg["Count"])
        self._store(key, job)
        ev = self._evaluate(key, "job-register")
        return _register_reply(ev, self._jobs[key]["JobModifyIndex"])

    def plan(self, query_ns: str | None, job_id: str, body: Any) -> Json:
        job = _body_job(body, "Job must have a valid ID")
        if job["ID"] != job_id:
            raise ApiError(400, "Job ID does not match")
        ns = query_ns or job.get("Namespace") or "default"
        job = canonicalize(job, ns)
        error = validation_error(job)
        if error:
            raise ApiError(500, error)
        key = (ns, job_id)
        old = self._jobs.get(key)
        candidate = copy.deepcopy(job)
        if spec_changed(old, job):
            candidate["JobModifyIndex"] = (old["JobModifyIndex"] + 1) if old else 100
        elif old is not None:
            candidate = copy.deepcopy(old)
        plans = {tg["Name"]: self._plan_group(key, candidate, tg) for tg in candidate["TaskGroups"]}
        desired = {name: p.desired_updates() for name, p in plans.items()}
        diff = None
        if body.get("Diff"):
            diff = job_diff(old, job)
            annotate(diff, desired)
        failed = {name: self._failure(p) for name, p in plans.items() if p.failed}
        return {"Diff": diff, "Annotations": {"DesiredTGUpdates": desired, "PreemptedAllocs": None},
                "JobModifyIndex": old["JobModifyIndex"] if old else 0,
                "FailedTGAllocs": failed or None, "CreatedEvals": None,
                "NextPeriodicLaunch": rfc3339(None), "Warnings": "", "Index": 0}

    def scale(self, ns: str, job_id: str, body: Any) -> Json:
        """``Job.Scale``, checks in Nomad's order (module doc)."""
        req = body if isinstance(body, dict) else {}
        target = req.get("Target") or {}
        if target.get("Job") not in (None, "", job_id):
            raise ApiError(400, "job ID in payload did not match URL")
        group, count = target.get("Group"), req.get("Count")
        _validate_scale(group, count, bool(req.get("Error")))
        key = (ns, job_id)
        job = self._jobs.get(key)
        if job is None:
            raise ApiError(404, f'job "{job_id}" not found')
        tg = find_group(job, str(group))
        if tg is None:
            raise ApiError(400, f'task group "{group}" specified for scaling does not exist in job')
        event = {"Count": count, "PreviousCount": int(tg["Count"]), "Message": req.get("Message", ""),
                 "Error": bool(req.get("Error")), "Meta": req.get("Meta"),
                 "Time": int(self._now * NS), "EvalID": None, "CreateIndex": 0}
        reply: Json = {"EvalID": "", "EvalCreateIndex": 0, "JobModifyIndex": job["ModifyIndex"]}
        if count is not None:
            reply = self._scale_count(key, job, tg, int(count), int(req.get("JobModifyIndex") or 0))
            event["EvalID"] = reply["EvalID"]
        event["CreateIndex"] = self._bump()
        events = self._events.setdefault(key, {}).setdefault(str(group), [])
        events.insert(0, event)
        del events[20:]
        return {**reply, "Warnings": "", "Index": event["CreateIndex"], "KnownLeader": False,
                "LastContact": 0}

    def _scale_count(self, key: Key, job: Json, tg: Json, count: int, modify_index: int) -> Json:
        scaling = tg.get("Scaling")
        if scaling is not None:
            if count < int(scaling.get("Min", 0)):
                raise ApiError(400, "group count was less than scaling policy minimum: "
                                    f"{count} < {scaling['Min']}")
            if int(scaling.get("Max", 0)) < count:
                raise ApiError(400, "group count was greater than scaling policy maximum: "
                                    f"{count} > {scaling['Max']}")
        dep = self._latest_deployment(key)
        if dep is not None and dep.active and dep.job_create_index == job["CreateIndex"]:
            raise ApiError(400, "job scaling blocked due to active deployment")
        if modify_index > 0 and modify_index != job["JobModifyIndex"]:
            raise ApiError(500, f"Enforcing job modify index {modify_index}: job exists with "
                                f"conflicting job modify index: {job['JobModifyIndex']}")
        new = copy.deepcopy(job)
        new_tg = find_group(new, tg["Name"])
        assert new_tg is not None
        new_tg["Count"] = count
        self._store(key, new)
        ev = self._evaluate(key, "job-scaling")
        return _register_reply(ev, self._jobs[key]["JobModifyIndex"])

    def scale_status(self, ns: str, job_id: str) -> Json:
        job = self._stored(ns, job_id)
        groups = {}
        for tg in job["TaskGroups"]:
            live = self._live((ns, job_id), tg["Name"])
            groups[tg["Name"]] = {
                "Desired": int(tg["Count"]), "Placed": len(live),
                "Running": sum(a.client == "running" for a in live),
                "Healthy": sum(a.healthy is True for a in live),
                "Unhealthy": sum(a.healthy is False for a in live),
                "Events": copy.deepcopy(self._events.get((ns, job_id), {}).get(tg["Name"])),
            }
        return {"JobID": job_id, "Namespace": ns, "JobStopped": bool(job.get("Stop")),
                "JobCreateIndex": job["CreateIndex"], "JobModifyIndex": job["ModifyIndex"],
                "TaskGroups": groups}

    def fail_deployment(self, deployment_id: str) -> Json:
        d = self._deployment_by_id(deployment_id)
        if d is None:
            raise ApiError(500, "deployment not found")
        if not d.active:
            raise ApiError(500, "can't fail terminal deployment")
        revert = any(g.auto_revert for g in d.groups.values())
        version = self._fail(d, "Deployment marked as failed", revert)
        ev = self._evaluate(d.key, "deployment-watcher", d.id)
        return {"EvalID": ev["ID"], "EvalCreateIndex": ev["CreateIndex"],
                "DeploymentModifyIndex": d.modify_index, "RevertedJobVersion": version,
                "Index": self._index}


def _body_job(body: Any, missing_id: str) -> Json:
    job = body.get("Job") if isinstance(body, dict) else None
    if not isinstance(job, dict):
        raise ApiError(400, "Job must be specified")
    if job.get("ID") is None:
        raise ApiError(400, missing_id)
    return job


def _enforce_index(old: Json | None, index: int) -> None:
    """``structs.Job.EnforceIndex`` (a plain error: HTTP 500)."""
    prefix = "Enforcing job modify index"
    if old is not None and index == 0:
        raise ApiError(500, f"{prefix} 0: job already exists")
    if old is not None and index != old["JobModifyIndex"]:
        raise ApiError(500, f"{prefix} {index}: job exists with conflicting job modify index: "
                            f"{old['JobModifyIndex']}")
    if old is None and index != 0:
        raise ApiError(500, f"{prefix} {index}: job does not exist")


def _validate_scale(group: Any, count: Any, error: bool) -> None:
    """``JobScaleRequest.Validate``."""
    if not group:
        raise ApiError(400, "missing task group name for scaling action")
    if count is not None:
        if not isinstance(count, int) or isinstance(count, bool):
            raise ApiError(400, f"json: cannot unmarshal {type(count).__name__} into Go struct "
                                "field ScalingRequest.Count of type int64")
        if count < 0:
            raise ApiError(400, "scaling action count can't be negative")
        if error:
            raise ApiError(400, "scaling action should not contain count if error is true")


def _register_reply(ev: Json, job_modify_index: int) -> Json:
    return {"EvalID": ev["ID"], "EvalCreateIndex": ev["CreateIndex"],
            "JobModifyIndex": job_modify_index, "Warnings": "", "Index": ev["ModifyIndex"],
            "KnownLeader": False, "LastContact": 0}
