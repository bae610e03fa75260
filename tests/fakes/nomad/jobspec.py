"""A job spec as the fake Nomad stores it: Nomad's defaults filled in, and comparisons.

* ``canonicalize`` - ``api/jobs.go`` ``Job.Canonicalize`` and ``api/tasks.go``
  ``TaskGroup.Canonicalize`` (run by ``command/agent/job_endpoint.go``
  ``ApiJobToStructJob`` on every register and plan): region ``global``, type
  ``service``, priority 50, the group's ``Update`` merged over ``DefaultUpdateStrategy``
  (only when a job or group update block exists), ``DefaultMigrateStrategy`` for service
  jobs, ``defaultServiceJobRestartPolicy``, ``NewDefaultReschedulePolicy("service")``,
  ``DefaultEphemeralDisk``, ``DefaultLogConfig``, task ``KillTimeout`` 5 s, scaling
  ``Type`` horizontal / ``Enabled`` true / ``Min`` = count.
* ``spec_changed`` - ``Job.SpecChanged``; ``tasks_updated`` - the destructive test of
  ``scheduler/util.go`` ``tasksUpdated`` (any task, network or volume change).

Pinned against hashicorp/nomad at aa026cc (2026-08). Pure, on the API JSON (PascalCase dicts).
"""

from __future__ import annotations

import copy
from typing import Any

from tests.fakes.nomad.api import NS, Json

DEFAULT_UPDATE: Json = {"Stagger": 30 * NS, "MaxParallel": 1, "HealthCheck": "checks",
                        "MinHealthyTime": 10 * NS, "HealthyDeadline": 300 * NS,
                        "ProgressDeadline": 600 * NS, "AutoRevert": False, "Canary": 0,
                        "AutoPromote": False}
DEFAULT_MIGRATE: Json = {"MaxParallel": 1, "HealthCheck": "checks", "MinHealthyTime": 10 * NS,
                         "HealthyDeadline": 300 * NS}
DEFAULT_RESTART: Json = {"Delay": 15 * NS, "Attempts": 2, "Interval": 1800 * NS, "Mode": "fail",
                         "RenderTemplates": False}
DEFAULT_RESCHEDULE: Json = {"Attempts": 0, "Interval": 0, "Delay": 30 * NS,
                            "DelayFunction": "exponential", "MaxDelay": 3600 * NS,
                            "Unlimited": True}
DEFAULT_DISK: Json = {"Sticky": False, "Migrate": False, "SizeMB": 300}
DEFAULT_LOGS: Json = {"MaxFiles": 10, "MaxFileSizeMB": 10, "Disabled": False}


# ---- canonicalize ----------------------------------------------------------------------

def _merged(defaults: Json, given: Any) -> Json:
    return {**defaults, **(given if isinstance(given, dict) else {})}


def canonicalize(job: Json, namespace: str, region: str = "global") -> Json:
    """A copy of ``job`` with the defaults Nomad's HTTP agent fills in before the RPC."""
    out = copy.deepcopy(job)
    out.setdefault("Name", out.get("ID"))
    out.setdefault("Type", "service")
    out["Region"] = out.get("Region") or region
    out["Namespace"] = namespace
    out.setdefault("Priority", 50)
    out.setdefault("Datacenters", ["*"])
    out.setdefault("Stop", False)
    out.setdefault("AllAtOnce", False)
    for tg in out.get("TaskGroups") or []:
        if isinstance(tg, dict):
            _canonical_group(tg, out)
    return out


def _canonical_group(tg: Json, job: Json) -> None:
    scaling = tg.get("Scaling")
    if tg.get("Count") is None:
        low = scaling.get("Min") if isinstance(scaling, dict) else None
        tg["Count"] = int(low) if low is not None else 1
    if isinstance(scaling, dict):
        scaling.setdefault("Enabled", True)
        scaling.setdefault("Min", tg["Count"])
        scaling.setdefault("Type", "horizontal")
        scaling["Target"] = {"Namespace": job["Namespace"], "Job": job.get("ID"),
                             "Group": tg.get("Name")}
    tg["EphemeralDisk"] = _merged(DEFAULT_DISK, tg.get("EphemeralDisk"))
    if job.get("Update") is not None or tg.get("Update") is not None:
        tg["Update"] = _merged(_merged(DEFAULT_UPDATE, job.get("Update")), tg.get("Update"))
    if job["Type"] == "service":
        tg["Migrate"] = _merged(DEFAULT_MIGRATE, tg.get("Migrate"))
        tg["ReschedulePolicy"] = _merged(DEFAULT_RESCHEDULE, tg.get("ReschedulePolicy"))
    tg["RestartPolicy"] = _merged(DEFAULT_RESTART, tg.get("RestartPolicy"))
    for svc in tg.get("Services") or []:
        if isinstance(svc, dict):
            svc.setdefault("Provider", "consul")
    for task in tg.get("Tasks") or []:
        if isinstance(task, dict):
            task.setdefault("KillTimeout", 5 * NS)
            task["LogConfig"] = _merged(DEFAULT_LOGS, task.get("LogConfig"))
            task["Resources"] = _merged({"CPU": 100, "MemoryMB": 300}, task.get("Resources"))



JOB_BOOKKEEPING = ("Status", "StatusDescription", "Version", "Stable", "CreateIndex",
                   "ModifyIndex", "JobModifyIndex", "SubmitTime", "NomadTokenID", "VaultToken")


def spec_changed(old: Json | None, new: Json) -> bool:
    """``Job.SpecChanged``: anything but bookkeeping differs."""
    if old is None:
        return True
    strip = [{k: v for k, v in j.items() if k not in JOB_BOOKKEEPING} for j in (old, new)]
    return strip[0] != strip[1]


def tasks_updated(old_job: Json, new_job: Json, group: str) -> bool:
    """``scheduler/util.go`` ``tasksUpdated``: a change that needs new allocations (any
    task, network, volume or ephemeral disk change). Count, scaling, update, migrate,
    restart, reschedule, meta and services are in-place."""
    a, b = find_group(old_job, group), find_group(new_job, group)
    if a is None or b is None:
        return True
    keys = ("Tasks", "Networks", "Volumes", "EphemeralDisk")
    return any(a.get(k) != b.get(k) for k in keys)


def find_group(job: Json, name: str) -> Json | None:
    return next((g for g in job.get("TaskGroups") or [] if g.get("Name") == name), None)

