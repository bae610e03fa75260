"""The fake Nomad's cluster state: allocations, deployments, job versions, the raft index.

Allocation health (``client/allocrunner/health_hook.go`` ``getHealthParams``)
  In a deployment: the group's ``update`` ``min_healthy_time``/``healthy_deadline``;
  outside one (no update block, ``replace_allocations``): its ``migrate`` block's, or
  ``DefaultMigrateStrategy`` (10 s / 5 min). Healthy once checks pass (task started +
  the job's model load time) for ``min_healthy_time`` before the deadline, else unhealthy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from tests.fakes.nomad.api import NS, Json, Key, rfc3339
from tests.fakes.nomad.jobspec import find_group

START = 1_750_000_000.0  # the default clock's epoch seconds
ACTIVE = frozenset({"running", "pending", "paused", "blocked", "initializing", "unblocking"})


class FakeClock:
    """Manual time (epoch seconds) shared by the fake and the test."""

    def __init__(self, start: float = START) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


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


class ClusterState:
    """Jobs and their versions, allocations, deployments, evaluations, scaling events, at
    one raft index. Callers hold ``_cond`` (notified on every index bump)."""

    def __init__(self, clock: Callable[[], float], gpu_nodes: list[int] | None) -> None:
        self.clock = clock
        self.gpu_nodes = gpu_nodes
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

    def _bump(self) -> int:
        self._index += 1
        self._cond.notify_all()
        return self._index

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

    def _live(self, key: Key, group: str) -> list[Alloc]:
        return sorted((a for a in self._allocs if a.key == key and a.group == group and a.live),
                      key=lambda a: a.index)

    def _latest_deployment(self, key: Key) -> Deployment | None:
        return next((d for d in reversed(self._deployments) if d.key == key), None)

    def _deployment_by_id(self, dep_id: str | None) -> Deployment | None:
        return next((d for d in self._deployments if d.id == dep_id), None)

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

    def _set_status(self, d: Deployment, status: str, desc: str) -> None:
        d.status, d.description = status, desc
        d.modify_index, d.modify_time = self._index + 1, self._now

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
