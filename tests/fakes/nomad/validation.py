"""Nomad's admission validation of a job, in Nomad's order and words (test code only).

``validation_error`` - the admission validator ``jobValidate.Validate``
(``nomad/job_endpoint_hooks.go``) over ``Job.Validate``, ``TaskGroup.Validate``,
``Task.Validate``, ``UpdateStrategy.Validate``, ``RestartPolicy.Validate``,
``ReschedulePolicy.Validate``, ``MigrateStrategy.Validate``,
``TaskGroup.validateServices`` / ``validateScriptChecksInGroupServices`` /
``validateScalingPolicy`` (``nomad/structs/structs.go``), ``Service.Validate`` and
``ValidateName`` (``nomad/structs/services.go``): the rules a Caravan job can hit,
in Nomad's order and words, formatted as hashicorp/go-multierror's ``ListFormatFunc``
(nested lists are embedded verbatim, as ``fmt.Errorf("...: %v", err)`` does).

Pinned against hashicorp/nomad at aa026cc (2026-08). Pure, on the API JSON (PascalCase dicts).
"""

from __future__ import annotations

import json
import re

from tests.fakes.nomad.api import NS, Json
from tests.fakes.nomad.go_format import go_duration, multierror

JOB_TYPES = ("service", "batch", "system", "sysbatch")
MAX_PRIORITY = 100  # server config job_max_priority default
SERVICE_NAME = re.compile(r"^(?i:[a-z0-9]|[a-z0-9][a-z0-9\-]{0,61}[a-z0-9])$")
ENV_VAR = re.compile(r"\$\{[^}]*\}")


def validation_error(job: Json) -> str | None:
    """The 500 body of a register/plan of ``job`` (canonicalized), or None when valid."""
    errs = _job_errors(job)
    priority = job.get("Priority", 50)
    if not isinstance(priority, int) or not 1 <= priority <= MAX_PRIORITY:
        errs.append(f"job priority must be between [1, {MAX_PRIORITY}]")
    return multierror(errs) if errs else None


def _job_errors(job: Json) -> list[str]:
    errs: list[str] = []
    jid, name = job.get("ID") or "", job.get("Name") or ""
    if not jid:
        errs.append("Missing job ID")
    elif " " in jid:
        errs.append("Job ID contains a space")
    if not name:
        errs.append("Missing job name")
    jtype = job.get("Type")
    if jtype not in JOB_TYPES:
        errs.append(f"Invalid job type: {json.dumps(jtype)}")
    dcs = job.get("Datacenters") or []
    if not dcs:
        errs.append("Missing job datacenters")
    errs += ["Job datacenter must be non-empty string" for dc in dcs if dc == ""]
    groups = [g for g in job.get("TaskGroups") or [] if isinstance(g, dict)]
    if not groups:
        errs.append("Missing job task groups")
    seen: dict[str, int] = {}
    for i, tg in enumerate(groups):
        name = tg.get("Name") or ""
        if not name:
            errs.append(f"Job task group {i + 1} missing name")
        elif name in seen:
            errs.append(f"Job task group {i + 1} redefines '{name}' from group {seen[name] + 1}")
        else:
            seen[name] = i
        if (tg.get("ShutdownDelay") or 0) < 0:
            errs.append("ShutdownDelay must be a positive value")
    for tg in groups:
        group_errs = _group_errors(tg, job)
        if group_errs:
            errs.append(f"Task group {tg.get('Name', '')} validation failed: "
                        f"{multierror(group_errs)}")
    return errs


def _group_errors(tg: Json, job: Json) -> list[str]:
    errs: list[str] = []
    if not tg.get("Name"):
        errs.append("Missing task group name")
    if int(tg.get("Count", 1)) < 0:
        errs.append("Task group count can't be negative")
    tasks = [t for t in tg.get("Tasks") or [] if isinstance(t, dict)]
    if not tasks:
        errs.append("Missing tasks for task group")
    errs += _restart_errors(tg.get("RestartPolicy") or {})
    errs += _reschedule_errors(tg.get("ReschedulePolicy") or {})
    if tg.get("Update") is not None:
        if job.get("Type") not in ("service", "system"):
            errs.append(f'Job type "{job.get("Type")}" does not allow update block')
        errs += _update_errors(tg["Update"])
    if tg.get("Migrate") is not None:
        errs += _migrate_errors(tg["Migrate"])
    errs += _task_name_errors(tasks)
    services = _service_errors(tg, tasks)
    if services:
        errs.append(f"Task group service validation failed: {multierror(services)}")
    scripts = _script_check_errors(tg)
    if scripts:
        errs.append(f"Task group service check validation failed: {multierror(scripts)}")
    scaling = _scaling_errors(tg)
    if scaling:
        errs.append(f"Task group scaling policy validation failed: {multierror(scaling)}")
    for task in tasks:
        task_errs = _task_errors(task, tg, job)
        if task_errs:
            errs.append(f"Task {task.get('Name', '')} validation failed: {multierror(task_errs)}")
    return errs


def _restart_errors(r: Json) -> list[str]:
    errs = []
    mode, attempts = r.get("Mode"), int(r.get("Attempts", 0))
    delay, interval = int(r.get("Delay", 0)), int(r.get("Interval", 0))
    if mode not in ("delay", "fail"):
        errs.append(f"Unsupported restart mode: {json.dumps(mode)}")
    if attempts == 0 and mode != "fail":
        errs.append(f'Restart policy "{mode}" with {attempts} attempts is ambiguous')
    if interval < 5 * NS:
        errs.append(f"Interval can not be less than 5s (got {go_duration(interval)})")
    if attempts * delay > interval:
        errs.append(f"Nomad can't restart the TaskGroup {attempts} times in an interval of "
                    f"{go_duration(interval)} with a delay of {go_duration(delay)}")
    return errs


def _reschedule_errors(r: Json) -> list[str]:
    if not (int(r.get("Attempts", 0)) > 0 or r.get("Unlimited")):
        return []
    errs = []
    delay, max_delay = int(r.get("Delay", 0)), int(r.get("MaxDelay", 0))
    if delay < 5 * NS:
        errs.append(f"Delay cannot be less than 5s (got {go_duration(delay)})")
    func = r.get("DelayFunction")
    if func not in ("constant", "exponential", "fibonacci"):
        errs.append(f'Invalid delay function "{func}", must be one of '
                    '["constant" "exponential" "fibonacci"]')
    if func != "constant":
        if max_delay < 5 * NS:
            errs.append(f"Max Delay cannot be less than 5s (got {go_duration(delay)})")
        if max_delay < delay:
            errs.append(f"Max Delay cannot be less than Delay {go_duration(delay)} "
                        f"(got {go_duration(max_delay)})")
    return errs


def _update_errors(u: Json) -> list[str]:
    errs = []
    if u.get("HealthCheck") not in ("checks", "task_states", "manual"):
        errs.append(f"Invalid health check given: {json.dumps(u.get('HealthCheck'))}")
    if u["MaxParallel"] < 0:
        errs.append(f"Max parallel can not be less than zero: {u['MaxParallel']} < 0")
    if u["Canary"] < 0:
        errs.append(f"Canary count can not be less than zero: {u['Canary']} < 0")
    if u["Canary"] == 0 and u.get("AutoPromote"):
        errs.append("Auto Promote requires a Canary count greater than zero")
    mht, hd, pd = u["MinHealthyTime"], u["HealthyDeadline"], u["ProgressDeadline"]
    if mht < 0:
        errs.append(f"Minimum healthy time may not be less than zero: {go_duration(mht)}")
    if hd <= 0:
        errs.append(f"Healthy deadline must be greater than zero: {go_duration(hd)}")
    if pd < 0:
        errs.append(f"Progress deadline must be zero or greater: {go_duration(pd)}")
    if mht >= hd:
        errs.append("Minimum healthy time must be less than healthy deadline: "
                    f"{go_duration(mht)} > {go_duration(hd)}")
    if pd != 0 and hd >= pd:
        errs.append("Healthy deadline must be less than progress deadline: "
                    f"{go_duration(hd)} > {go_duration(pd)}")
    if u.get("Stagger", 0) <= 0:
        errs.append(f"Stagger must be greater than zero: {go_duration(u.get('Stagger', 0))}")
    return errs


def _migrate_errors(m: Json) -> list[str]:
    errs = []
    if m.get("MaxParallel", 1) < 0:
        errs.append(f"MaxParallel must be >= 0 but found {m['MaxParallel']}")
    if m.get("HealthCheck") not in ("checks", "task_states"):
        errs.append(f"Invalid HealthCheck: {json.dumps(m.get('HealthCheck'))}")
    mht, hd = m.get("MinHealthyTime", 0), m.get("HealthyDeadline", 0)
    if mht < 0:
        errs.append(f"MinHealthyTime is {go_duration(mht)} and must be >= 0")
    if hd < 0:
        errs.append(f"HealthyDeadline is {go_duration(hd)} and must be >= 0")
    if mht > hd:
        errs.append("MinHealthyTime must be less than HealthyDeadline")
    return errs


def _task_name_errors(tasks: list[Json]) -> list[str]:
    errs, seen = [], {}
    for i, t in enumerate(tasks):
        name = t.get("Name") or ""
        if not name:
            errs.append(f"Task {i + 1} missing name")
        elif name in seen:
            errs.append(f"Task {i + 1} redefines '{name}' from task {seen[name] + 1}")
        else:
            seen[name] = i
    return errs


def _service_errors(tg: Json, tasks: list[Json]) -> list[str]:
    """``TaskGroup.validateServices`` for group services (Caravan has no task services)."""
    errs: list[str] = []
    names = {t.get("Name") for t in tasks}
    seen: set[tuple[str, str]] = set()
    dupes: list[str] = []
    for i, svc in enumerate(tg.get("Services") or []):
        key = (svc.get("Name", ""), svc.get("PortLabel", ""))
        if key in seen:
            dupes.append(f"group->{key[0]}" + (f":{key[1]}" if key[1] else ""))
        seen.add(key)
        svc_errs = _one_service_errors(svc)
        if svc_errs:
            errs.append(f"Service[{i}] {svc.get('Name', '')} validation failed: "
                        f"{multierror(svc_errs)}")
            continue
        for check in svc.get("Checks") or []:
            task = check.get("TaskName")
            if task and task not in names:
                errs.append(f"Check {check.get('Name')} invalid: refers to non-existent task "
                            f"{task}")
    if dupes:
        errs.append(f"Services are not unique: {', '.join(dupes)}")
    return errs


def _one_service_errors(svc: Json) -> list[str]:
    """``Service.Validate``: the RFC 1123 name, the provider, each check."""
    errs = []
    name = str(svc.get("Name", ""))
    if not SERVICE_NAME.match(ENV_VAR.sub("ENV-VAR", name)):
        errs.append("Service name must be valid per RFC 1123 and can contain only alphanumeric "
                    "characters or dashes and must be no longer than 63 characters: "
                    f"{json.dumps(name)}")
    provider = svc.get("Provider")
    if provider not in ("consul", "nomad"):
        errs.append(f'Service provider must be "consul", or "nomad"; not "{provider}"')
        return errs
    for check in svc.get("Checks") or []:
        problem = _check_problem(svc, check)
        if problem:
            errs.append(problem)
    return errs


def _check_problem(svc: Json, c: Json) -> str | None:
    name, ctype = c.get("Name", ""), c.get("Type", "")
    if ctype in ("http", "tcp", "grpc") and not (svc.get("PortLabel") or c.get("PortLabel")):
        return (f"Check {name} invalid: check requires a port but neither check nor service "
                f"{json.dumps(svc.get('Name', ''))} have a port")
    problem = None
    if ctype not in ("grpc", "tcp", "http", "script"):
        problem = f'invalid check type ("{ctype}"), must be one of grpc, tcp, http, script'
    elif ctype == "http" and not c.get("Path"):
        problem = "http type must have http path"
    elif ctype == "script" and not c.get("Command"):
        problem = "script type must have a valid script path"
    elif int(c.get("Interval", 0)) < NS:
        problem = ("missing required value interval. Interval cannot be less than 1s"
                   if not c.get("Interval") else
                   f"interval ({go_duration(c['Interval'])}) cannot be lower than 1s")
    elif int(c.get("Timeout", 0)) < NS:
        problem = ("missing required value timeout. Timeout cannot be less than 1s"
                   if not c.get("Timeout") else
                   f"timeout ({go_duration(c['Timeout'])}) is lower than required minimum "
                   "timeout 1s")
    return None if problem is None else f"Check {name} invalid: {problem}"


def _script_check_errors(tg: Json) -> list[str]:
    return [f"Service [{tg.get('Name')}]->{svc.get('Name')} or Check {c.get('Name')} must "
            "specify task parameter"
            for svc in tg.get("Services") or [] if not svc.get("TaskName")
            for c in svc.get("Checks") or []
            if c.get("Type") == "script" and not c.get("TaskName")]


def _scaling_errors(tg: Json) -> list[str]:
    s = tg.get("Scaling")
    if not isinstance(s, dict):
        return []
    errs = []
    lo, hi, count = int(s.get("Min", 0)), int(s.get("Max", -1)), int(tg.get("Count", 1))
    if hi < 0:
        errs.append("Scaling policy invalid: maximum count must be specified and non-negative")
    elif hi < lo:
        errs.append("Scaling policy invalid: maximum count must not be less than minimum count")
    if lo < 0:
        errs.append("Scaling policy invalid: minimum count must be specified and non-negative")
    if hi < count:
        errs.append("Scaling policy invalid: task group count must not be greater than maximum "
                    "count in scaling policy")
    if count < lo:
        errs.append("Scaling policy invalid: task group count must not be less than minimum "
                    "count in scaling policy")
    return errs


def _task_errors(t: Json, tg: Json, job: Json) -> list[str]:
    errs = []
    name = t.get("Name") or ""
    if not name:
        errs.append("Missing task name")
    if name == "alloc":
        errs.append('Task cannot be named "alloc"')
    if "/" in name or "\\" in name:
        errs.append("Task name cannot include slashes")
    if not t.get("Driver"):
        errs.append("Missing task driver")
    kill = int(t.get("KillTimeout", 0))
    pd = int((tg.get("Update") or {}).get("ProgressDeadline", 0))
    if kill < 0:
        errs.append("KillTimeout must be a positive value")
    elif job.get("Type") == "service" and pd > 0 and kill > pd:
        errs.append(f"KillTimout ({go_duration(kill)}) longer than the group's ProgressDeadline "
                    f"({go_duration(pd)})")
    res = t.get("Resources") or {}
    if int(res.get("CPU", 100)) < 1:
        errs.append(f"minimum CPU value is 1; got {res.get('CPU')}")
    if int(res.get("MemoryMB", 300)) < 10:
        errs.append(f"minimum MemoryMB value is 10; got {res.get('MemoryMB')}")
    volumes = tg.get("Volumes") or {}
    errs += [f"Volume Mount ({i}) references undefined volume {m.get('Volume')}"
             for i, m in enumerate(t.get("VolumeMounts") or []) if m.get("Volume") not in volumes]
    seen: dict[str, int] = {}
    for i, tpl in enumerate(t.get("Templates") or [], start=1):
        dest = tpl.get("DestPath", "")
        if dest in seen:
            errs.append(f"Template {i} has same destination as {seen[dest]}")
        else:
            seen[dest] = i
    return errs

