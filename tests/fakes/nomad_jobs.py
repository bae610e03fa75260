"""Pure helpers of the Nomad fake: job validation and plan diffs, as Nomad reports them.

Test code only. ``validation_errors`` mirrors the messages of Nomad's ``Job.Validate``
for the mistakes a jobspec usually has; ``plan_diff`` returns the ``Diff`` and
``Annotations.DesiredTGUpdates`` parts of a ``POST /v1/job/:id/plan`` answer.
"""

from __future__ import annotations

import json
from typing import Any

JOB_TYPES = ("service", "batch", "system", "sysbatch")
Json = dict[str, Any]


def validation_errors(job: Any) -> list[str]:
    """Nomad's job validation messages (the subset a jobspec typo usually trips)."""
    if not isinstance(job, dict):
        return ["Job must be specified"]
    errs: list[str] = []
    jid = job.get("ID")
    if not jid:
        errs.append("Missing job ID")
    elif " " in jid:
        errs.append("Job ID contains a space")
    if not job.get("Name"):
        errs.append("Missing job name")
    if job.get("Type", "service") not in JOB_TYPES:
        errs.append(f"Invalid job type: {job.get('Type')!r}")
    groups = job.get("TaskGroups")
    if not isinstance(groups, list) or not groups:
        return [*errs, "Missing job task groups"]
    seen: set[str] = set()
    for i, tg in enumerate(groups, start=1):
        errs.extend(_group_errors(i, tg, seen))
    return errs


def _group_errors(i: int, tg: Any, seen: set[str]) -> list[str]:
    if not isinstance(tg, dict):
        return [f"Task group {i} must be an object"]
    name = tg.get("Name") or ""
    errs = [] if name else [f"Job task group {i} missing name"]
    if name in seen:
        errs.append(f"Job task group {i} redefines '{name}' from group {i - 1}")
    seen.add(name)
    if int(tg.get("Count", 1)) < 0:
        errs.append(f"Task group {name} validation failed: Task group count can't be negative")
    tasks = tg.get("Tasks")
    if not isinstance(tasks, list) or not tasks:
        errs.append(f"Task group {name} validation failed: Missing tasks for task group")
        return errs
    for t in tasks:
        if not isinstance(t, dict) or not t.get("Name") or not t.get("Driver"):
            errs.append(f"Task group {name} validation failed: task missing name or driver")
    return errs


def multierror(errs: list[str]) -> str:
    lines = "".join(f"\t* {e}\n" for e in errs)
    return f"{len(errs)} error{'s' if len(errs) > 1 else ''} occurred:\n{lines}\n"


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Dotted-path -> JSON scalar text, for field-level diffs."""
    if isinstance(value, dict | list):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        out: dict[str, str] = {}
        for k, v in items:
            sub = f"{prefix}[{k}]" if isinstance(k, int) else f"{prefix}.{k}" if prefix else k
            out.update(_flatten(v, sub))
        return out
    return {prefix: json.dumps(value)}


def _field_diffs(old: Any, new: Any) -> list[dict[str, str]]:
    a, b = _flatten(old), _flatten(new)
    diffs = []
    for name in sorted(set(a) | set(b)):
        if a.get(name) == b.get(name):
            continue
        kind = "Added" if name not in a else "Deleted" if name not in b else "Edited"
        diffs.append({"Type": kind, "Name": name, "Old": a.get(name, ""), "New": b.get(name, "")})
    return diffs


_BOOKKEEPING = ("Version", "JobModifyIndex", "ModifyIndex", "CreateIndex", "Status", "Stop",
                "Namespace", "Stable", "SubmitTime")


def _strip(job: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (job or {}).items() if k not in _BOOKKEEPING}


def plan_diff(old: Json | None, new: Json) -> tuple[Json, Json]:
    """(Diff, DesiredTGUpdates) the way Nomad's scheduler reports a dry run."""
    old_s, new_s = _strip(old), _strip(new)
    old_groups = {g["Name"]: g for g in old_s.pop("TaskGroups", [])}
    new_groups = {g["Name"]: g for g in new_s.pop("TaskGroups", [])}
    tg_diffs, updates = [], {}
    for name in sorted(set(old_groups) | set(new_groups)):
        o, n = old_groups.get(name), new_groups.get(name)
        fields = _field_diffs(o or {}, n or {})
        kind = "Added" if o is None else "Deleted" if n is None else "Edited" if fields else "None"
        tg_diffs.append({"Type": kind, "Name": name, "Fields": fields, "Objects": None,
                         "Tasks": None, "Updates": None})
        updates[name] = _desired_updates(o, n)
    job_fields = _field_diffs(old_s, new_s) if old is not None else []
    changed = job_fields or any(d["Type"] != "None" for d in tg_diffs)
    kind = "Added" if old is None else "Edited" if changed else "None"
    diff = {"Type": kind, "ID": new.get("ID"), "Fields": job_fields, "Objects": None,
            "TaskGroups": tg_diffs}
    return diff, updates


def _desired_updates(old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, int]:
    before = int(old.get("Count", 1)) if old else 0
    after = int(new.get("Count", 1)) if new else 0
    tasks_changed = bool(old and new and old.get("Tasks") != new.get("Tasks"))
    kept = min(before, after)
    return {"Place": max(after - before, 0), "Stop": max(before - after, 0),
            "DestructiveUpdate": kept if tasks_changed else 0,
            "Ignore": 0 if tasks_changed else kept, "InPlaceUpdate": 0, "Migrate": 0,
            "Canary": 0, "Preemptions": 0}
