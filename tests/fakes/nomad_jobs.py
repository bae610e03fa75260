"""Pure job logic of the Nomad fake, ported from Nomad's source (test code only).

Pinned against hashicorp/nomad at aa026cc (2026-08). What each function mirrors:

* ``canonicalize`` - ``api/jobs.go`` ``Job.Canonicalize`` and ``api/tasks.go``
  ``TaskGroup.Canonicalize`` (run by ``command/agent/job_endpoint.go``
  ``ApiJobToStructJob`` on every register and plan): region ``global``, type
  ``service``, priority 50, the group's ``Update`` merged over ``DefaultUpdateStrategy``
  (only when a job or group update block exists), ``DefaultMigrateStrategy`` for service
  jobs, ``defaultServiceJobRestartPolicy``, ``NewDefaultReschedulePolicy("service")``,
  ``DefaultEphemeralDisk``, ``DefaultLogConfig``, task ``KillTimeout`` 5 s, scaling
  ``Type`` horizontal / ``Enabled`` true / ``Min`` = count.
* ``validation_error`` - the admission validator ``jobValidate.Validate``
  (``nomad/job_endpoint_hooks.go``) over ``Job.Validate``, ``TaskGroup.Validate``,
  ``Task.Validate``, ``UpdateStrategy.Validate``, ``RestartPolicy.Validate``,
  ``ReschedulePolicy.Validate``, ``MigrateStrategy.Validate``,
  ``TaskGroup.validateServices`` / ``validateScriptChecksInGroupServices`` /
  ``validateScalingPolicy`` (``nomad/structs/structs.go``), ``Service.Validate`` and
  ``ValidateName`` (``nomad/structs/services.go``): the rules a Caravan job can hit,
  in Nomad's order and words, formatted as hashicorp/go-multierror's ``ListFormatFunc``
  (nested lists are embedded verbatim, as ``fmt.Errorf("...: %v", err)`` does).
* ``job_diff`` - ``Job.Diff(other, contextual=true)`` (``nomad/structs/diff.go``, as
  ``Job.Plan`` calls it): task groups nest ``Fields``/``Objects``/``Tasks``; tasks nest
  their own ``Fields`` (primitive fields, ``Env[k]``/``Meta[k]`` maps) and ``Objects``
  (``Config`` flattened like ``helper/flatmap``, ``Resources``, ``Template``, ...);
  ``annotate`` adds ``scheduler/annotate.go``'s ``Updates`` and annotations.
* ``spec_changed`` - ``Job.SpecChanged``; ``tasks_updated`` - the destructive test of
  ``scheduler/util.go`` ``tasksUpdated`` (any task, network or volume change).

Everything here is pure and works on the API JSON (PascalCase dicts).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

Json = dict[str, Any]
NS = 1_000_000_000
JOB_TYPES = ("service", "batch", "system", "sysbatch")
MAX_PRIORITY = 100  # server config job_max_priority default

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


# ---- Go formatting -----------------------------------------------------------------------

def multierror(errs: list[str]) -> str:
    """hashicorp/go-multierror ``ListFormatFunc``."""
    if len(errs) == 1:
        return f"1 error occurred:\n\t* {errs[0]}\n\n"
    points = "\n\t".join(f"* {e}" for e in errs)
    return f"{len(errs)} errors occurred:\n\t{points}\n\n"


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String`` for whole milliseconds and up: 1h0m0s, 25m0s, 30s, 500ms."""
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < NS:
        return f"{sign}{ns // 1_000_000}ms"
    h, rest = divmod(ns, 3600 * NS)
    m, rest = divmod(rest, 60 * NS)
    s = rest / NS
    sec = f"{s:.9f}".rstrip("0").rstrip(".")
    if h:
        return f"{sign}{h}h{m}m{sec}s"
    return f"{sign}{m}m{sec}s" if m else f"{sign}{sec}s"


def go_value(v: Any) -> str:
    """``fmt.Sprintf("%v", v)`` of a value in a ``map[string]interface{}`` as Go decodes
    JSON into it: every number is a float64, so 8589934592 prints as 8.589934592e+09."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return _go_float(float(v))
    return "" if v is None else str(v)


def go_typed(v: Any) -> str:
    """``%v`` of a typed struct field (``flatmap``'s Int/Bool/String cases)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return _go_float(v)
    return "" if v is None else str(v)


def _go_float(f: float) -> str:
    """strconv ``FormatFloat(f, 'g', -1, 64)``: %e when the exponent is < -4 or >= 6."""
    if f == 0:
        return "0"
    _sign, digits, exponent = Decimal(repr(abs(f))).normalize().as_tuple()
    text = "".join(str(d) for d in digits)
    exp = len(text) + int(exponent) - 1
    neg = "-" if f < 0 else ""
    if exp < -4 or exp >= 6:
        mant = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{neg}{mant}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    plain = repr(abs(f))
    return neg + (plain[:-2] if plain.endswith(".0") else plain)


# ---- validation --------------------------------------------------------------------------

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


# ---- spec comparison -------------------------------------------------------------------------

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


# ---- plan diff -------------------------------------------------------------------------------

MAP_FIELDS = ("Meta", "Env")
ORDER = {"Edited": 0, "Added": 1, "Deleted": 2, "None": 3}


def _flat_primitive(obj: Json | None, skip: Iterable[str] = ()) -> dict[str, str]:
    """``flatmap.Flatten(obj, filter, primitiveOnly=true)``: scalars and maps of scalars."""
    out: dict[str, str] = {}
    for key, value in (obj or {}).items():
        if key in skip:
            continue
        if key in MAP_FIELDS and isinstance(value, dict):
            out.update({f"{key}[{k}]": go_typed(v) for k, v in value.items()})
        elif not isinstance(value, dict | list):
            out[key] = go_typed(value)
    return out


def _flat_all(value: Any, prefix: str = "") -> dict[str, str]:
    """``flatmap.Flatten(obj, nil, false)`` of a ``map[string]interface{}`` (Config, Policy)."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_flat_all(v, f"{prefix}[{k}]" if prefix else str(k)))
        return out
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(_flat_all(v, f"{prefix}[{i}]"))
        return out
    return {prefix: go_value(value)}


def _field(kind: str, name: str, old: str, new: str) -> Json:
    return {"Type": kind, "Name": name, "Old": old, "New": new, "Annotations": None}


def field_diffs(old: dict[str, str] | None, new: dict[str, str] | None,
                contextual: bool) -> list[Json]:
    """``fieldDiffs``: one FieldDiff per changed key (every key when ``contextual``)."""
    a, b = old or {}, new or {}
    out = []
    for name in set(a) | set(b):
        o, n = a.get(name, ""), b.get(name, "")
        if o == n:
            if contextual:
                out.append(_field("None", name, o, n))
            continue
        kind = "Added" if o == "" else "Deleted" if n == "" else "Edited"
        out.append(_field(kind, name, o, n))
    return sorted(out, key=lambda f: (f["Name"], f["Old"], f["New"]))


def _object(name: str, old: Any, new: Any, flat: Callable[[Any], dict[str, str]],
            objects: list[Json] | None = None) -> Json | None:
    """``primitiveObjectDiff`` (contextual): None when nothing changed."""
    if old == new and not objects:
        return None
    fields = field_diffs(flat(old) if old is not None else None,
                         flat(new) if new is not None else None, contextual=True)
    kinds = {f["Type"] for f in fields} | {o["Type"] for o in objects or []}
    if old is None:
        kind = "Added"
    elif new is None:
        kind = "Deleted"
    elif kinds - {"None"}:
        kind = "Edited"
    else:
        return None
    return {"Type": kind, "Name": name, "Fields": fields, "Objects": objects or None}


def _sorted_objects(objs: Iterable[Json | None]) -> list[Json] | None:
    real = [o for o in objs if o is not None]
    return sorted(real, key=lambda o: (o["Name"], ORDER[o["Type"]])) or None


def _list_objects(name: str, old: list[Json] | None, new: list[Json] | None,
                  key: Callable[[Json], Any], diff: Callable[[str, Any, Any], Json | None],
                  ) -> list[Json | None]:
    a = {key(x): x for x in old or []}
    b = {key(x): x for x in new or []}
    return [diff(name, a.get(k), b.get(k)) for k in list(a) + [k for k in b if k not in a]]


def _plain(name: str, old: Any, new: Any) -> Json | None:
    return _object(name, old, new, _flat_primitive)


def _check(name: str, old: Json | None, new: Json | None) -> Json | None:
    sub = _plain("CheckRestart", (old or {}).get("CheckRestart"), (new or {}).get("CheckRestart"))
    return _object(name, old, new, _flat_primitive, [sub] if sub else None)


def _service(name: str, old: Json | None, new: Json | None) -> Json | None:
    checks = _list_objects("Check", (old or {}).get("Checks"), (new or {}).get("Checks"),
                           lambda c: c.get("Name"), _check)
    tags = _string_set("Tags", (old or {}).get("Tags"), (new or {}).get("Tags"))
    return _object(name, old, new, _flat_primitive, _sorted_objects([*checks, tags]))


def _string_set(name: str, old: list[str] | None, new: list[str] | None) -> Json | None:
    a, b = set(old or []), set(new or [])
    if a == b:
        return None
    fields = [_field("Deleted", name, v, "") for v in sorted(a - b)]
    fields += [_field("Added", name, "", v) for v in sorted(b - a)]
    kind = "Edited" if a - b and b - a else "Added" if b - a else "Deleted"
    return {"Type": kind, "Name": name, "Fields": fields, "Objects": None}


def _network(name: str, old: Json | None, new: Json | None) -> Json | None:
    ports = []
    for label, key in (("Dynamic Port", "DynamicPorts"), ("Static Port", "ReservedPorts")):
        ports += _list_objects(label, (old or {}).get(key), (new or {}).get(key),
                               lambda p: p.get("Label"), _plain)
    return _object(name, old, new, _flat_primitive, _sorted_objects(ports))


def _scaling(name: str, old: Json | None, new: Json | None) -> Json | None:
    skip = ("CreateIndex", "ModifyIndex", "ID", "Type", "Target")
    policy = _object("Policy", (old or {}).get("Policy"), (new or {}).get("Policy"), _flat_all)
    return _object(name, old, new, lambda s: _flat_primitive(s, skip),
                   [policy] if policy else None)


def _resources(name: str, old: Json | None, new: Json | None) -> Json | None:
    devices = _list_objects("Device", (old or {}).get("Devices"), (new or {}).get("Devices"),
                            lambda d: d.get("Name"), _plain)
    return _object(name, old, new, _flat_primitive, _sorted_objects(devices))


def task_diff(old: Json | None, new: Json | None) -> Json:
    """``Task.Diff`` (contextual objects)."""
    a, b = old or {}, new or {}
    kind = "Added" if old is None else "Deleted" if new is None else (
        "Edited" if old != new else "None")
    fields = field_diffs(_flat_primitive(old, ("Name", "Config")) if old else None,
                         _flat_primitive(new, ("Name", "Config")) if new else None, False)
    objs = [_object("Config", a.get("Config"), b.get("Config"), _flat_all),
            _resources("Resources", a.get("Resources"), b.get("Resources")),
            _plain("LogConfig", a.get("LogConfig"), b.get("LogConfig"))]
    objs += _list_objects("Template", a.get("Templates"), b.get("Templates"),
                          lambda t: t.get("DestPath"), _plain)
    objs += _list_objects("VolumeMount", a.get("VolumeMounts"), b.get("VolumeMounts"),
                          lambda m: (m.get("Volume"), m.get("Destination")), _plain)
    return {"Type": kind, "Name": (new or old or {}).get("Name"), "Fields": fields,
            "Objects": _sorted_objects(objs), "Annotations": None}


def group_diff(old: Json | None, new: Json | None) -> Json:
    """``TaskGroup.Diff``: group fields, group objects, then every task (None ones too)."""
    a, b = old or {}, new or {}
    kind = "Added" if old is None else "Deleted" if new is None else (
        "Edited" if old != new else "None")
    fields = field_diffs(_flat_primitive(old, ("Name",)) if old else None,
                         _flat_primitive(new, ("Name",)) if new else None, False)
    objs = [_plain(n, a.get(n), b.get(n)) for n in
            ("RestartPolicy", "Migrate", "ReschedulePolicy", "EphemeralDisk")]
    update_skip = ("Stagger",)
    objs.append(_object("Update", a.get("Update"), b.get("Update"),
                        lambda u: _flat_primitive(u, update_skip)))
    objs += _list_objects("Network", a.get("Networks"), b.get("Networks"),
                          lambda n: n.get("Mode"), _network)
    objs.append(_scaling("Scaling", a.get("Scaling"), b.get("Scaling")))
    objs += _list_objects("Service", a.get("Services"), b.get("Services"),
                          lambda s: (s.get("Name"), s.get("PortLabel")), _service)
    objs += _list_objects("Volume", list((a.get("Volumes") or {}).values()),
                          list((b.get("Volumes") or {}).values()), lambda v: v.get("Name"),
                          _plain)
    tasks = {t.get("Name"): t for t in a.get("Tasks") or []}
    new_tasks = {t.get("Name"): t for t in b.get("Tasks") or []}
    tdiffs = [task_diff(tasks.get(n), new_tasks.get(n)) for n in sorted(set(tasks) | set(new_tasks))]
    return {"Type": kind, "Name": (new or old or {}).get("Name"), "Fields": fields,
            "Objects": _sorted_objects(objs), "Tasks": tdiffs, "Updates": None}


def job_diff(old: Json | None, new: Json) -> Json:
    """``Job.Diff(new, contextual=true)`` of two canonicalized jobs."""
    skip = (*JOB_BOOKKEEPING, "ID", "Update")
    fields = field_diffs(_flat_primitive(old, skip) if old else None,
                         _flat_primitive(new, skip), False)
    dcs = _string_set("Datacenters", (old or {}).get("Datacenters"), new.get("Datacenters"))
    groups_a = {g.get("Name"): g for g in (old or {}).get("TaskGroups") or []}
    groups_b = {g.get("Name"): g for g in new.get("TaskGroups") or []}
    tgs = [group_diff(groups_a.get(n), groups_b.get(n)) for n in sorted(set(groups_a) | set(groups_b))]
    kind = "Added" if old is None else "None"
    if kind == "None" and (any(f["Type"] != "None" for f in fields) or dcs
                           or any(g["Type"] != "None" for g in tgs)):
        kind = "Edited"
    return {"Type": kind, "ID": new.get("ID"), "Fields": fields,
            "Objects": [dcs] if dcs else None, "TaskGroups": tgs}


UPDATE_NAMES = (("Ignore", "ignore"), ("Place", "create"), ("Migrate", "migrate"),
                ("Stop", "destroy"), ("Canary", "canary"), ("InPlaceUpdate", "in-place update"),
                ("DestructiveUpdate", "create/destroy update"))


def annotate(diff: Json, desired: dict[str, Json]) -> None:
    """``scheduler/annotate.go`` ``Annotate``: group ``Updates``, Count and task annotations."""
    for tg in diff.get("TaskGroups") or []:
        counts = desired.get(tg["Name"]) or {}
        updates = {label: counts[key] for key, label in UPDATE_NAMES if counts.get(key)}
        tg["Updates"] = updates or None
        for f in tg["Fields"]:
            if f["Name"] == "Count":
                old, new = int(f["Old"] or 0), int(f["New"] or 0)
                if old != new:
                    f["Annotations"] = ["forces create" if old < new else "forces destroy"]
        for task in tg["Tasks"]:
            _annotate_task(task, tg)


def _annotate_task(task: Json, parent: Json) -> None:
    if task["Type"] == "None":
        return
    if parent["Type"] in ("Added", "Deleted") and task["Type"] in ("Added", "Deleted"):
        task["Annotations"] = ["forces create" if task["Type"] == "Added" else "forces destroy"]
        return
    destructive = any(f["Name"] != "KillTimeout" for f in task["Fields"]) or any(
        o["Name"] not in ("Service", "Constraint", "Affinity", "Spread", "LogConfig")
        for o in task["Objects"] or [])
    task["Annotations"] = ["forces create/destroy update" if destructive
                           else "forces in-place update"]
