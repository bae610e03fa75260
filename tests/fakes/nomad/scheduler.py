"""The fake Nomad's scheduler: evaluations, placement on GPU nodes, deployments created.

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
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field

from tests.fakes.nomad.api import NS, Json, Key
from tests.fakes.nomad.jobspec import tasks_updated
from tests.fakes.nomad.state import Alloc, ClusterState, Deployment, GroupDeploy

DEVICES_EXHAUSTED = "devices: no devices match request"


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


def gpus(tg: Json) -> int:
    """GPUs one allocation of group ``tg`` takes (its ``nvidia/gpu`` device counts)."""
    return sum(int(d.get("Count", 1)) for t in tg.get("Tasks") or []
               for d in (t.get("Resources") or {}).get("Devices") or []
               if "gpu" in str(d.get("Name", "")))


class Scheduler(ClusterState):
    """``Worker`` + ``GenericScheduler``: evaluations processed at once. Callers hold ``_cond``."""

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
        nodes = self._choose_nodes(gpus(tg), plan.place, plan.stop + plan.destructive)
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
        a = Alloc(str(uuid.uuid4()), key, tg["Name"], index, job, node, gpus(tg), self._now,
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
