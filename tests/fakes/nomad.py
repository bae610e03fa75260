"""A Nomad fake built from Nomad's source, for contract tests (test code only).

A real HTTP(S) server on 127.0.0.1 in a daemon thread, serving what Caravan calls, with
Nomad's status codes, texts and check order. Pinned against hashicorp/nomad at aa026cc
(2026-08); each behaviour names the function it follows:

Endpoints (``command/agent/job_endpoint.go`` unless noted)
  POST /v1/jobs, /v1/job/:id   ``jobUpdate`` then ``nomad/job_endpoint.go`` ``Job.Register``
      -> ``doRegister``: 400 "Job must be specified" / "Job ID hasn't been provided" /
      "Job ID does not match name"; admission validation (``nomad_jobs.validation_error``)
      and ``Job.EnforceIndex`` conflicts are plain errors, so **HTTP 500** (only
      ``RPCCodedErr``/``CodedError`` become 4xx: ``command/agent/http.go`` ``wrap``);
      an unchanged spec creates an eval but no version (``multiregionSpecChanged``);
      ``PreserveCounts`` keeps the stored counts (``state_store.go``
      ``updatePreservedValues``, applied *after* the spec-changed test).
  POST /v1/job/:id/plan          ``jobPlan`` -> ``Job.Plan``: same validation (500), a dry-run
      of the reconciler, ``Diff`` from ``nomad_jobs.job_diff`` annotated like
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

Scheduling (``scheduler/reconciler/reconcile_cluster.go`` ``computeGroup``)
  Per group: stop the highest-index extra allocations; an allocation of an older job
  version is updated **in place** when its tasks did not change (``genericAllocUpdateFn``,
  ``tasksUpdated``), which drops its health (``inplaceUpdate``: ``DeploymentStatus = nil``),
  else replaced (at most ``MaxParallel`` in flight); missing allocations are placed.
  ``createDeployment``: a group with an ``update`` block gets a deployment when allocations
  are updated or it is the job version's first run, so **every scale of such a group
  starts a deployment**. A replica needs one node with enough free GPUs (its
  ``nvidia/gpu`` device count); otherwise the eval records ``FailedTGAllocs``
  (``DimensionExhausted["devices: no devices match request"]``, ``scheduler/feasible``
  ``deviceAllocator.createOffer``) and a ``blocked`` eval waits for capacity.

Allocation health (``client/allocrunner/health_hook.go`` ``getHealthParams``)
  In a deployment: the group's ``update`` ``min_healthy_time``/``healthy_deadline``;
  outside one (no update block, ``replace_allocations``): its ``migrate`` block's, or
  ``DefaultMigrateStrategy`` (10 s / 5 min). Healthy once checks pass (task started +
  the job's model load time) for ``min_healthy_time`` before the deadline, else unhealthy.

Deployments (``nomad/deploymentwatcher/deployment_watcher.go``)
  ``RequireProgressBy`` starts at the first placement and moves to each healthy
  allocation + ``progress_deadline`` (``state_store.go`` ``updateDeploymentWithAlloc``);
  success when every group has ``DesiredTotal`` healthy and nothing left to place (the
  job version becomes ``Stable``); at the deadline ``shouldFail`` fails it ("Failed due to
  progress deadline") and, with ``auto_revert``, ``latestStableJob`` is registered again
  as a new version (``handleRollbackValidity``: only when its spec differs). A newer job
  version cancels the running deployment (``cancelUnneededServiceDeployments``).

Not modelled: canaries, task-level restarts, rescheduling of failed or unhealthy
allocations, preemption, CPU/memory bin packing, multi-region. Blocking queries use one
global index (Nomad uses per-table indexes; both only promise "changed since").

Test controls (thread-safe, time from the injected ``clock``; advance it with
``advance(seconds)``): ``set_model_load(job, seconds | None)`` (None: the model never
loads, checks never pass), ``set_task_start(job, seconds | None)`` (None: stays
pending), ``set_gpu_nodes([...])`` (GPUs per client node; None: unlimited),
``replace_allocations(job, group, n)`` (a node drain: n allocations replaced outside any
deployment), ``serving(job, group)`` (replicas whose model loaded), ``job()``,
``allocations()``, ``deployments()``, ``evaluations()``.
``requests`` logs every request (method, path, query, body, token).
"""

from __future__ import annotations

import copy
import json
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fakes.nomad_jobs import (
    NS,
    annotate,
    canonicalize,
    find_group,
    job_diff,
    spec_changed,
    tasks_updated,
    validation_error,
)

Json = dict[str, Any]
Key = tuple[str, str]
START = 1_750_000_000.0  # the default clock's epoch seconds
ACTIVE = frozenset({"running", "pending", "paused", "blocked", "initializing", "unblocking"})
MAX_EVENTS = 100_000  # bound on events processed by one catch-up
DEVICES_EXHAUSTED = "devices: no devices match request"


class ApiError(Exception):
    """An HTTP error answer: ``status`` and Nomad's plain-text ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class FakeClock:
    """Manual time (epoch seconds) shared by the fake and the test."""

    def __init__(self, start: float = START) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    token: str | None


@dataclass
class Alloc:
    """One allocation. Times are clock seconds; ``ready_at`` None: checks never pass."""

    id: str
    key: Key
    group: str
    index: int
    job: Json
    node: int
    gpus: int
    created_at: float
    run_at: float | None
    ready_at: float | None
    watch_start: float
    min_healthy_s: float
    deadline_s: float
    deployment_id: str | None = None
    desired: str = "run"
    client: str = "pending"
    healthy: bool | None = None
    health_time: float | None = None
    create_index: int = 0
    modify_index: int = 0

    @property
    def live(self) -> bool:
        return self.desired == "run" and self.client in ("pending", "running")

    def next_event(self) -> tuple[float, str] | None:
        """(time, "run" | "healthy" | "unhealthy") of its next client-side change."""
        if not self.live:
            return None
        if self.client == "pending" and self.run_at is not None:
            return self.run_at, "run"
        if self.healthy is not None:
            return None
        deadline = self.watch_start + self.deadline_s
        if self.ready_at is not None and self.run_at is not None:
            at = max(self.ready_at, self.watch_start) + self.min_healthy_s
            if at <= deadline:
                return at, "healthy"
        return deadline, "unhealthy"


@dataclass
class GroupDeploy:
    auto_revert: bool
    progress_deadline_s: float
    desired_total: int
    placed: int = 0
    healthy: int = 0
    unhealthy: int = 0
    require_progress_by: float | None = None


@dataclass
class Deployment:
    id: str
    key: Key
    job_version: int
    job_modify_index: int  # the job's ModifyIndex
    job_spec_modify_index: int  # the job's JobModifyIndex (structs.NewDeployment)
    job_create_index: int
    groups: dict[str, GroupDeploy]
    create_index: int
    create_time: float
    status: str = "running"
    description: str = "Deployment is running"
    modify_index: int = 0
    modify_time: float = 0.0

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


@dataclass
class GroupPlan:
    """One group's reconcile result (``reconciler.ReconcileResults``)."""

    stop: list[Alloc] = field(default_factory=list)
    inplace: list[Alloc] = field(default_factory=list)
    destructive: list[Alloc] = field(default_factory=list)  # replaced now
    destructive_total: int = 0
    ignore: int = 0
    place: int = 0
    nodes: list[int] = field(default_factory=list)  # placed on, in order
    failed: int = 0

    def desired_updates(self) -> Json:
        return {"Ignore": self.ignore, "Place": self.place - len(self.destructive),
                "Migrate": 0, "Stop": len(self.stop), "InPlaceUpdate": len(self.inplace),
                "DestructiveUpdate": len(self.destructive), "Canary": 0, "Preemptions": 0}


def rfc3339(t: float | None) -> str:
    if t is None:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _gpus(tg: Json) -> int:
    return sum(int(d.get("Count", 1)) for t in tg.get("Tasks") or []
               for d in (t.get("Resources") or {}).get("Devices") or []
               if "gpu" in str(d.get("Name", "")))


class FakeNomad:
    """The fake server. Use as a context manager or call ``start()``/``stop()``.

    ``token``: required X-Nomad-Token (403 "Permission denied" otherwise).
    ``gpu_nodes``: GPUs of each client node (None: unlimited capacity); allocations take
    their ``nvidia/gpu`` device count from one node.
    ``tls``: (cert, key, client CA or None) to serve HTTPS; with a client CA, a client
    certificate signed by it is required (``tls.verify_https_client``).
    """

    def __init__(self, token: str | None = None, host: str = "127.0.0.1",
                 clock: Callable[[], float] | None = None, gpu_nodes: list[int] | None = None,
                 tls: tuple[str, str, str | None] | None = None) -> None:
        self.token = token
        self.clock = clock or FakeClock()
        self.gpu_nodes = gpu_nodes
        self.requests: list[RecordedRequest] = []
        self._jobs: dict[Key, Json] = {}
        self._versions: dict[Key, list[Json]] = {}
        self._allocs: list[Alloc] = []
        self._deployments: list[Deployment] = []
        self._evals: list[Json] = []
        self._events: dict[Key, dict[str, list[Json]]] = {}
        self._load: dict[Key, float | None] = {}
        self._start: dict[Key, float | None] = {}
        self._index = 1
        self._now = self.clock()
        self._cond = threading.Condition()
        self._server = ThreadingHTTPServer((host, 0), _handler_for(self))
        self._server.daemon_threads = True
        self._scheme = "http"
        if tls is not None:
            self._wrap_tls(*tls)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True)

    def _wrap_tls(self, cert: str, key: str, client_ca: str | None) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if client_ca is not None:
            ctx.load_verify_locations(client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        self._scheme = "https"

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}"

    def start(self) -> FakeNomad:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeNomad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- test controls ---------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        """Move a ``FakeClock`` forward and let allocations and deployments catch up."""
        if not isinstance(self.clock, FakeClock):
            raise TypeError("advance() needs the default FakeClock; move your clock instead")
        with self._cond:
            self.clock.t += seconds
            self._catch_up()

    def set_model_load(self, job_id: str, seconds: float | None, namespace: str = "default",
                       ) -> None:
        """Checks pass ``seconds`` after the task starts (None: never, the model cannot load)."""
        with self._cond:
            self._load[(namespace, job_id)] = seconds

    def set_task_start(self, job_id: str, seconds: float | None, namespace: str = "default",
                       ) -> None:
        """Tasks start ``seconds`` after placement (None: allocations stay pending)."""
        with self._cond:
            self._start[(namespace, job_id)] = seconds

    def set_gpu_nodes(self, nodes: list[int] | None) -> None:
        """Replace the client nodes (GPUs each); blocked evaluations run again."""
        with self._cond:
            self._catch_up()
            self.gpu_nodes = nodes
            self._unblock()

    def replace_allocations(self, job_id: str, group: str, n: int,
                            namespace: str = "default") -> None:
        """A node drain: stop ``n`` live allocations and place replacements outside any
        deployment (health judged by the group's ``migrate`` block)."""
        with self._cond:
            self._catch_up()
            key = (namespace, job_id)
            victims = [a for a in self._live(key, group)][:n]
            for a in victims:
                self._stop_alloc(a)
            tg = find_group(self._jobs[key], group)
            assert tg is not None
            for node in self._choose_nodes(_gpus(tg), n, []):
                if node is not None:
                    self._new_alloc(key, tg, node, None)
            self._bump()

    def serving(self, job_id: str, group: str, namespace: str = "default") -> int:
        """Live allocations whose model has loaded (checks pass): what serves traffic,
        whatever Nomad's deployment health says (an in-place update keeps serving)."""
        with self._cond:
            self._catch_up()
            now = self.clock()
            return sum(1 for a in self._live((namespace, job_id), group)
                       if a.ready_at is not None and a.ready_at <= now)

    def job(self, job_id: str, namespace: str = "default") -> Json | None:
        with self._cond:
            self._catch_up()
            return copy.deepcopy(self._jobs.get((namespace, job_id)))

    def allocations(self, job_id: str, namespace: str = "default") -> list[Json]:
        with self._cond:
            self._catch_up()
            return [self._alloc_json(a) for a in self._allocs if a.key == (namespace, job_id)]

    def deployments(self, job_id: str, namespace: str = "default") -> list[Json]:
        """Newest first."""
        with self._cond:
            self._catch_up()
            return [self._deploy_json(d) for d in reversed(self._deployments)
                    if d.key == (namespace, job_id)]

    def evaluations(self, job_id: str, namespace: str = "default") -> list[Json]:
        """Newest first."""
        with self._cond:
            self._catch_up()
            return [copy.deepcopy(e) for e in reversed(self._evals)
                    if (e["Namespace"], e["JobID"]) == (namespace, job_id)]

    # ---- clock-driven state (hold self._cond) ----------------------------------------
    def _bump(self) -> int:
        self._index += 1
        self._cond.notify_all()
        return self._index

    def _catch_up(self) -> None:
        """Apply every allocation and deployment change due by ``clock()``, in time order."""
        target = self.clock()
        for _ in range(MAX_EVENTS):
            nxt = self._next_event(target)
            if nxt is None:
                break
            at, apply = nxt
            self._now = max(self._now, at)
            apply()
            self._bump()
        self._now = max(self._now, target)

    def _next_event(self, target: float) -> tuple[float, Callable[[], None]] | None:
        best: tuple[float, Callable[[], None]] | None = None
        for a in self._allocs:
            ev = a.next_event()
            if ev is not None and ev[0] <= target and (best is None or ev[0] < best[0]):
                best = (ev[0], _bind(self._alloc_event, a, ev[1]))
        for d in self._deployments:
            due = self._deadline(d)
            if due is not None and due <= target and (best is None or due < best[0]):
                best = (due, _bind(self._progress_deadline, d))
        return best

    def _alloc_event(self, a: Alloc, what: str) -> None:
        a.modify_index = self._index + 1
        if what == "run":
            a.client = "running"
            return
        a.healthy, a.health_time = what == "healthy", self._now
        dep = self._deployment_by_id(a.deployment_id)
        if dep is None or not dep.active:
            return
        gd = dep.groups.get(a.group)
        if gd is None:
            return
        if a.healthy:
            gd.healthy += 1
            if gd.require_progress_by is not None:
                gd.require_progress_by = max(gd.require_progress_by,
                                             self._now + gd.progress_deadline_s)
            self._evaluate(a.key, "deployment-watcher", dep.id)
        else:
            gd.unhealthy += 1
        self._check_complete(dep)

    def _deadline(self, d: Deployment) -> float | None:
        if not d.active:
            return None
        dues = [g.require_progress_by for name, g in d.groups.items()
                if g.require_progress_by is not None and not self._group_done(d, name)]
        return min(dues) if dues else None

    def _group_done(self, d: Deployment, group: str) -> bool:
        gd = d.groups[group]
        job = self._jobs.get(d.key)
        tg = find_group(job, group) if job else None
        live = len(self._live(d.key, group))
        return gd.healthy >= gd.desired_total and tg is not None and live >= int(tg["Count"])

    def _check_complete(self, d: Deployment) -> None:
        if d.active and all(self._group_done(d, g) for g in d.groups):
            self._set_status(d, "successful", "Deployment completed successfully")
            for job in self._versions.get(d.key, []):
                if job["Version"] == d.job_version:
                    job["Stable"] = True
            current = self._jobs[d.key]
            if current["Version"] == d.job_version:
                current["Stable"] = True
                current["ModifyIndex"] = self._index + 1

    def _progress_deadline(self, d: Deployment) -> None:
        """``deploymentWatcher.watch``: the deadline fired; ``shouldFail`` decides."""
        failing = [g for g, gd in d.groups.items() if gd.healthy < gd.desired_total]
        if not failing:
            self._check_complete(d)
            return
        revert = any(d.groups[g].auto_revert for g in failing)
        self._fail(d, "Failed due to progress deadline", revert)

    def _fail(self, d: Deployment, desc: str, revert: bool) -> int | None:
        """Fail ``d``; with ``revert``, register the latest stable version again. Returns
        the version reverted to."""
        stable = next((j for j in self._versions.get(d.key, []) if j.get("Stable")), None)
        target = None
        if revert and stable is None:
            desc += " - no stable job version to auto revert to"
        elif revert and stable is not None:
            if spec_changed(stable, self._jobs[d.key]):
                desc += f" - rolling back to job version {stable['Version']}"
                target = stable
            else:
                desc += (f" - not rolling back to stable job version {stable['Version']} as "
                         "current job has same specification")
        self._set_status(d, "failed", desc)
        if target is None:
            return None
        self._store(d.key, copy.deepcopy(target))
        self._evaluate(d.key, "rollback", d.id)
        return int(target["Version"])

    def _set_status(self, d: Deployment, status: str, desc: str) -> None:
        d.status, d.description = status, desc
        d.modify_index, d.modify_time = self._index + 1, self._now

    # ---- jobs ---------------------------------------------------------------------------
    def _auth(self, token: str | None) -> None:
        if self.token is not None and token != self.token:
            raise ApiError(403, "Permission denied")

    def _stored(self, ns: str, job_id: str) -> Json:
        job = self._jobs.get((ns, job_id))
        if job is None:
            raise ApiError(404, "job not found")
        return job

    def _store(self, key: Key, job: Json) -> int:
        """``upsertJobImpl``: a new version of ``key``."""
        old = self._jobs.get(key)
        index = self._bump()
        job = {k: v for k, v in job.items() if k not in ("Stable", "Version")}
        job.update(Version=(old["Version"] + 1) if old else 0, JobModifyIndex=index,
                   ModifyIndex=index, CreateIndex=old["CreateIndex"] if old else index,
                   Stable=False, Status="running", SubmitTime=int(self._now * NS))
        self._jobs[key] = job
        self._versions.setdefault(key, []).insert(0, job)
        return index

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

    # ---- scheduler ------------------------------------------------------------------------
    def _live(self, key: Key, group: str) -> list[Alloc]:
        return sorted((a for a in self._allocs if a.key == key and a.group == group and a.live),
                      key=lambda a: a.index)

    def _latest_deployment(self, key: Key) -> Deployment | None:
        return next((d for d in reversed(self._deployments) if d.key == key), None)

    def _deployment_by_id(self, dep_id: str | None) -> Deployment | None:
        return next((d for d in self._deployments if d.id == dep_id), None)

    def _free(self) -> list[int] | None:
        """Free GPUs per node once live allocations took theirs (None: unlimited)."""
        if self.gpu_nodes is None:
            return None
        free = list(self.gpu_nodes)
        for a in self._allocs:
            if a.live and 0 <= a.node < len(free):
                free[a.node] -= a.gpus
        return free

    def _choose_nodes(self, gpus: int, n: int, freed: list[Alloc]) -> list[int | None]:
        """A node for each of ``n`` replicas needing ``gpus`` each (None: no fit)."""
        free = self._free()
        if free is not None:
            for a in freed:
                if 0 <= a.node < len(free):
                    free[a.node] += a.gpus
        out: list[int | None] = []
        for _ in range(n):
            if free is None or gpus == 0:
                out.append(0)
                continue
            node = next((i for i, f in enumerate(free) if f >= gpus), None)
            if node is not None:
                free[node] -= gpus
            out.append(node)
        return out

    def _plan_group(self, key: Key, job: Json, tg: Json) -> GroupPlan:
        """``computeGroup`` for one group, without changing anything."""
        plan = GroupPlan()
        live = self._live(key, tg["Name"])
        count = int(tg["Count"])
        plan.stop = live[count:] if len(live) > count else []
        kept = live[: len(live) - len(plan.stop)]
        current = [a for a in kept if a.job["JobModifyIndex"] == job["JobModifyIndex"]]
        old = [a for a in kept if a.job["JobModifyIndex"] != job["JobModifyIndex"]]
        destructive = [a for a in old if tasks_updated(a.job, job, tg["Name"])]
        plan.inplace = [a for a in old if a not in destructive]
        plan.destructive_total = len(destructive)
        limit = self._destructive_limit(key, job, tg, destructive)
        plan.destructive = destructive[:limit]
        plan.ignore = len(current) + len(destructive) - len(plan.destructive)
        missing = max(count - len(kept), 0)
        plan.place = missing + len(plan.destructive)
        nodes = self._choose_nodes(_gpus(tg), plan.place, plan.stop + plan.destructive)
        plan.nodes = [n for n in nodes if n is not None]
        plan.failed = len(nodes) - len(plan.nodes)
        return plan

    def _destructive_limit(self, key: Key, job: Json, tg: Json, destructive: list[Alloc]) -> int:
        update = tg.get("Update")
        if not update or not update.get("MaxParallel"):
            return len(destructive)
        dep = self._latest_deployment(key)
        in_flight = 0
        if dep is not None and dep.active and dep.job_version == job.get("Version"):
            in_flight = sum(1 for a in self._live(key, tg["Name"])
                            if a.deployment_id == dep.id and a.healthy is not True)
        return max(int(update["MaxParallel"]) - in_flight, 0)

    def _evaluate(self, key: Key, trigger: str, deployment_id: str = "") -> Json:
        """Create an evaluation and process it at once (``Worker`` + ``GenericScheduler``).
        ``DeploymentID`` is the deployment that triggered it (``structs.Evaluation``), set
        only for the deployment watcher's evaluations, never for the one that created it."""
        job = self._jobs[key]
        ev = self._new_eval(key, trigger, "complete")
        ev["DeploymentID"] = deployment_id
        self._cancel_old_deployment(key, job)
        dep = self._active_for(key, job)
        failures: Json = {}
        for tg in job["TaskGroups"]:
            plan = self._plan_group(key, job, tg)
            dep = self._apply(key, job, tg, plan, dep)
            if plan.failed:
                failures[tg["Name"]] = self._failure(plan)
        if failures:
            ev["FailedTGAllocs"] = failures
            blocked = self._new_eval(key, "queued-allocs", "blocked")
            blocked.update(StatusDescription="created due to placement conflicts",
                           PreviousEval=ev["ID"], FailedTGAllocs=copy.deepcopy(failures))
            ev["BlockedEval"] = blocked["ID"]
            for old in self._evals:
                if old is not blocked and old["JobID"] == key[1] and old["Status"] == "blocked":
                    old.update(Status="canceled",
                               StatusDescription="existing blocked evaluation exists for job")
        if dep is not None:
            self._check_complete(dep)
        self._bump()
        return ev

    def _new_eval(self, key: Key, trigger: str, status: str) -> Json:
        index = self._bump()
        ev = {"ID": str(uuid.uuid4()), "Namespace": key[0], "JobID": key[1], "Priority": 50,
              "Type": self._jobs[key]["Type"], "TriggeredBy": trigger, "Status": status,
              "StatusDescription": "", "JobModifyIndex": self._jobs[key]["JobModifyIndex"],
              "DeploymentID": "", "FailedTGAllocs": None, "BlockedEval": "",
              "PreviousEval": "", "CreateIndex": index, "ModifyIndex": index,
              "CreateTime": int(self._now * NS), "ModifyTime": int(self._now * NS)}
        self._evals.append(ev)
        return ev

    def _cancel_old_deployment(self, key: Key, job: Json) -> None:
        dep = self._latest_deployment(key)
        if dep is not None and dep.active and dep.job_version != job["Version"]:
            self._set_status(dep, "cancelled", "Cancelled due to newer version of job")

    def _active_for(self, key: Key, job: Json) -> Deployment | None:
        dep = self._latest_deployment(key)
        return dep if dep is not None and dep.active and dep.job_version == job["Version"] else None

    def _apply(self, key: Key, job: Json, tg: Json, plan: GroupPlan,
               dep: Deployment | None) -> Deployment | None:
        """Commit one group's plan; create the deployment when ``createDeployment`` would."""
        for a in plan.stop + plan.destructive:
            self._stop_alloc(a)
        dep = self._maybe_deploy(key, job, tg, plan, dep)
        for a in plan.inplace:
            self._update_in_place(a, job, tg, dep)
        for node in plan.nodes:
            self._new_alloc(key, tg, node, dep, job)
        return dep

    def _maybe_deploy(self, key: Key, job: Json, tg: Json, plan: GroupPlan,
                      dep: Deployment | None) -> Deployment | None:
        update = tg.get("Update")
        if dep is not None and tg["Name"] in dep.groups:
            return dep
        if not update or not update.get("MaxParallel"):
            return dep
        total = plan.destructive_total + len(plan.inplace) + (plan.place - len(plan.destructive))
        had_running = any(a.job["Version"] == job["Version"] for a in self._live(key, tg["Name"]))
        if total == 0 or (had_running and not plan.destructive_total and not plan.inplace):
            return dep
        if dep is None:
            dep = Deployment(str(uuid.uuid4()), key, int(job["Version"]), int(job["ModifyIndex"]),
                             int(job["JobModifyIndex"]), int(job["CreateIndex"]), {},
                             self._bump(), self._now)
            self._deployments.append(dep)
        dep.groups[tg["Name"]] = GroupDeploy(bool(update.get("AutoRevert")),
                                             update["ProgressDeadline"] / NS, total)
        return dep

    def _join(self, a: Alloc, dep: Deployment | None, tg: Json) -> None:
        a.deployment_id = dep.id if dep is not None else None
        gd = dep.groups.get(tg["Name"]) if dep is not None else None
        strategy = tg.get("Update") if gd is not None else tg.get("Migrate")
        strategy = strategy or {"MinHealthyTime": 10 * NS, "HealthyDeadline": 300 * NS}
        a.min_healthy_s = strategy["MinHealthyTime"] / NS
        a.deadline_s = strategy["HealthyDeadline"] / NS
        a.watch_start = self._now
        if gd is not None:
            gd.placed += 1
            if gd.require_progress_by is None and gd.progress_deadline_s:
                gd.require_progress_by = self._now + gd.progress_deadline_s

    def _update_in_place(self, a: Alloc, job: Json, tg: Json, dep: Deployment | None) -> None:
        a.job = job
        a.healthy = a.health_time = None
        a.modify_index = self._bump()
        self._join(a, dep, tg)

    def _new_alloc(self, key: Key, tg: Json, node: int, dep: Deployment | None,
                   job: Json | None = None) -> Alloc:
        job = job or self._jobs[key]
        taken = {a.index for a in self._live(key, tg["Name"])}
        index = next(i for i in range(len(taken) + 1) if i not in taken)
        start, load = self._start.get(key, 0.0), self._load.get(key, 0.0)
        run_at = None if start is None else self._now + start
        ready = None if run_at is None or load is None else run_at + load
        a = Alloc(str(uuid.uuid4()), key, tg["Name"], index, job, node, _gpus(tg), self._now,
                  run_at, ready, self._now, 0.0, 0.0, create_index=self._bump())
        a.modify_index = a.create_index
        if run_at is not None and run_at <= self._now:
            a.client = "running"
        self._join(a, dep, tg)
        self._allocs.append(a)
        return a

    def _stop_alloc(self, a: Alloc) -> None:
        a.desired, a.client = "stop", "complete"
        a.modify_index = self._bump()

    def _unblock(self) -> None:
        """``BlockedEvals.Unblock``: capacity changed, blocked jobs are evaluated again."""
        keys = {(e["Namespace"], e["JobID"]) for e in self._evals if e["Status"] == "blocked"}
        for e in self._evals:
            if e["Status"] == "blocked":
                e.update(Status="complete", ModifyIndex=self._bump())
        for key in sorted(keys):
            if key in self._jobs:
                self._evaluate(key, "queued-allocs")

    def _failure(self, plan: GroupPlan) -> Json:
        """An ``AllocMetric`` of a failed placement (``structs.AllocMetric``)."""
        nodes = len(self.gpu_nodes or [])
        return {"NodesEvaluated": nodes, "NodesFiltered": 0, "NodesInPool": nodes,
                "NodePool": "default", "NodesAvailable": {"dc1": nodes},
                "ClassFiltered": None, "ConstraintFiltered": None, "NodesExhausted": nodes,
                "ClassExhausted": None, "DimensionExhausted": {DEVICES_EXHAUSTED: nodes},
                "QuotaExhausted": None, "ResourcesExhausted": None, "Scores": None,
                "AllocationTime": 0, "CoalescedFailures": plan.failed - 1, "ScoreMetaData": None}

    # ---- JSON views -------------------------------------------------------------------------
    def _alloc_json(self, a: Alloc) -> Json:
        health = None if a.healthy is None else {
            "Healthy": a.healthy, "Timestamp": rfc3339(a.health_time), "Canary": False,
            "ModifyIndex": a.modify_index}
        return {"ID": a.id, "Name": f"{a.key[1]}.{a.group}[{a.index}]", "NodeID": f"node-{a.node}",
                "Namespace": a.key[0], "JobID": a.key[1], "JobVersion": a.job["Version"],
                "TaskGroup": a.group, "DesiredStatus": a.desired, "ClientStatus": a.client,
                "DeploymentID": a.deployment_id or "", "DeploymentStatus": health,
                "CreateIndex": a.create_index, "ModifyIndex": a.modify_index,
                "CreateTime": int(a.created_at * NS)}

    def _deploy_json(self, d: Deployment) -> Json:
        groups = {name: {"AutoRevert": g.auto_revert, "AutoPromote": False, "Promoted": False,
                         "ProgressDeadline": int(g.progress_deadline_s * NS),
                         "RequireProgressBy": rfc3339(g.require_progress_by),
                         "PlacedCanaries": None, "DesiredCanaries": 0,
                         "DesiredTotal": g.desired_total, "PlacedAllocs": g.placed,
                         "HealthyAllocs": g.healthy, "UnhealthyAllocs": g.unhealthy}
                  for name, g in d.groups.items()}
        return {"ID": d.id, "Namespace": d.key[0], "JobID": d.key[1], "JobVersion": d.job_version,
                "JobModifyIndex": d.job_modify_index, "JobSpecModifyIndex": d.job_spec_modify_index,
                "JobCreateIndex": d.job_create_index, "IsMultiregion": False,
                "TaskGroups": groups, "Status": d.status, "StatusDescription": d.description,
                "EvalPriority": 50, "CreateIndex": d.create_index,
                "ModifyIndex": d.modify_index or d.create_index,
                "CreateTime": int(d.create_time * NS), "ModifyTime": int(d.modify_time * NS)}

    def wait_index(self, index: int, wait_s: float) -> None:
        """Blocking-query wait: until the state index exceeds ``index`` or ``wait_s`` passes."""
        deadline = time.monotonic() + wait_s
        while self._index <= index:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)
            self._catch_up()


def _bind(fn: Callable[..., None], *args: Any) -> Callable[[], None]:
    return lambda: fn(*args)


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


def parse_wait(text: str | None) -> float:
    """Nomad's ``wait`` duration ("30s", "5m", "250ms"); default 5 min, capped at 10 min."""
    if not text:
        return 300.0
    units = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0))
    for suffix, scale in units:
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return min(float(text[: -len(suffix)]) * scale, 600.0)
    raise ApiError(400, f"Invalid wait time {text!r}")


def _handler_for(fake: FakeNomad) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as separate writes

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def do_PUT(self) -> None:
            self._serve()

        def _serve(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            token = self.headers.get("X-Nomad-Token")
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError as exc:
                return self._send(400, str(exc), None)
            with fake._cond:
                fake.requests.append(RecordedRequest(self.command, url.path, query, body, token))
                try:
                    fake._auth(token)
                    fake._catch_up()
                    answer = _route(fake, self.command, url.path, query, body)
                    self._send(200, answer, fake._index)
                except ApiError as err:
                    self._send(err.status, err.message, None)

        def _send(self, status: int, payload: Any, index: int | None) -> None:
            text = payload if isinstance(payload, str) and status != 200 else json.dumps(payload)
            data = text.encode()
            self.send_response(status)
            ctype = "text/plain; charset=utf-8" if status != 200 else "application/json"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            if index is not None:
                self.send_header("X-Nomad-Index", str(index))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _route(fake: FakeNomad, method: str, path: str, query: dict[str, str], body: Any) -> Any:
    """Dispatch one request. Called with ``fake._cond`` held."""
    ns = query.get("namespace") or "default"
    parts = [unquote(p) for p in path.strip("/").split("/")]
    write = method in ("POST", "PUT")
    if parts == ["v1", "jobs"] and write:
        return fake.register(query.get("namespace"), body, None)
    if parts[:2] == ["v1", "deployment"] and len(parts) >= 3:
        return _route_deployment(fake, method, parts[2:])
    if parts[:2] != ["v1", "job"] or len(parts) < 3:
        raise ApiError(404, f"Invalid URL path {path}")
    job_id, rest = parts[2], parts[3:]
    if not rest:
        if write:
            return fake.register(query.get("namespace"), body, job_id)
        return copy.deepcopy(fake._stored(ns, job_id))
    if rest == ["plan"] and write:
        return fake.plan(query.get("namespace"), job_id, body)
    if rest == ["scale"] and write:
        return fake.scale(ns, job_id, body)
    if rest == ["scale"]:
        fake._stored(ns, job_id)
        if "index" in query:
            fake.wait_index(int(query["index"]), parse_wait(query.get("wait")))
        return fake.scale_status(ns, job_id)
    return _route_job_reads(fake, ns, job_id, rest)


def _route_job_reads(fake: FakeNomad, ns: str, job_id: str, rest: list[str]) -> Any:
    key = (ns, job_id)
    if rest == ["deployment"]:
        dep = fake._latest_deployment(key)
        return None if dep is None else fake._deploy_json(dep)
    if rest == ["evaluations"]:
        return [copy.deepcopy(e) for e in fake._evals if (e["Namespace"], e["JobID"]) == key]
    if rest == ["allocations"]:
        return [fake._alloc_json(a) for a in fake._allocs if a.key == key]
    raise ApiError(404, f"Invalid URL path /v1/job/{job_id}/{'/'.join(rest)}")


def _route_deployment(fake: FakeNomad, method: str, rest: list[str]) -> Any:
    if rest[0] == "fail" and len(rest) == 2 and method in ("POST", "PUT"):
        return fake.fail_deployment(rest[1])
    if len(rest) == 1 and method == "GET":
        dep = fake._deployment_by_id(rest[0])
        if dep is None:
            raise ApiError(404, "deployment not found")
        return fake._deploy_json(dep)
    raise ApiError(404, f"Invalid URL path /v1/deployment/{'/'.join(rest)}")
