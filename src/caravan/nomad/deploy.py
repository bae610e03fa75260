"""``caravan deploy``: plan every job, show the diff, register after confirmation.

The Nomad I/O sits behind ``JobsApi`` (``current``/``plan``/``register`` of one
``{"Job": ...}`` request body); ``PythonNomadJobs`` is the production adapter
(python-nomad, built by ``caravan.nomad.client``, which also resolves the settings:
flag > env > spec). Everything else here is pure: count keeping, plan summaries, and
the deploy flow with injected ``confirm``/``echo``.

A deploy never undoes the autoscaler: a group with a ``scaling`` block keeps the count
stored in Nomad (``keep_counts``; registered with ``PreserveCounts``), so a count-only
difference is no change; every register carries ``EnforceIndex`` with the plan's
``JobModifyIndex``, so a job that changed between plan and register (a scale, another
deploy) is refused by Nomad (HTTP 500 "Enforcing job modify index ...") and reported as
"the job changed since the plan; run deploy again", with nothing more registered.

Errors: ``NomadApiError`` names the job and carries Nomad's status and message
(e.g. a 500 for an invalid job). The ACL token is held only in ``NomadSettings.token``
(excluded from ``repr``) and sent as ``X-Nomad-Token``; it is never printed or logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from caravan.errors import BackendError
from caravan.nomad.client import NomadSettings, nomad_client, resolve_nomad_settings

__all__ = ["NomadSettings", "resolve_nomad_settings"]  # re-exported: the settings live in client.py

log = logging.getLogger(__name__)
Json = dict[str, Any]


class NomadApiError(BackendError):
    """Nomad refused a request about ``job_id``: HTTP ``status`` (0: no answer) and message."""

    def __init__(self, job_id: str, status: int, message: str) -> None:
        self.job_id, self.status, self.message = job_id, status, message.strip()
        if status:
            super().__init__(f"job {job_id!r}: Nomad refused it (HTTP {status}): {self.message}")
        else:
            super().__init__(f"job {job_id!r}: cannot reach Nomad: {self.message}")

    @property
    def index_conflict(self) -> bool:
        """The job changed since the plan (``EnforceIndex``; Nomad answers 500)."""
        return ENFORCE_INDEX_PREFIX in self.message


ENFORCE_INDEX_PREFIX = "Enforcing job modify index"  # nomad/structs/job.go


class JobsApi(Protocol):
    """Nomad's jobs API, one job at a time. All raise ``NomadApiError``. Not thread-safe."""

    def current(self, job_id: str) -> Json | None:
        """``GET /v1/job/:id``: the stored job, or None when Nomad has none (404)."""
        ...

    def plan(self, request: Json) -> Json:
        """``POST /v1/job/:id/plan`` with ``Diff: true``; the plan answer."""
        ...

    def register(self, request: Json) -> Json:
        """``POST /v1/jobs``; the answer (``EvalID``, ``JobModifyIndex``...)."""
        ...


class PythonNomadJobs:
    """``JobsApi`` over python-nomad (``caravan.nomad.client``, TLS verified with the
    settings' CA, client certificate presented). ``timeout_s`` bounds every request."""

    def __init__(self, settings: NomadSettings, timeout_s: float = 30.0) -> None:
        self._client = nomad_client(settings, timeout_s)

    def current(self, job_id: str) -> Json | None:
        try:
            return self._call(job_id, lambda: self._client.job.get_job(job_id))
        except NomadApiError as exc:
            if exc.status == 404:
                return None
            raise

    def plan(self, request: Json) -> Json:
        job_id = str(request["Job"]["ID"])
        return self._call(job_id, lambda: self._client.job.plan_job(job_id, request, diff=True))

    def register(self, request: Json) -> Json:
        job_id = str(request["Job"]["ID"])
        return self._call(job_id, lambda: self._client.jobs.register_job(request))

    @staticmethod
    def _call(job_id: str, fn: Callable[[], Any]) -> Json:
        from nomad.api import exceptions

        try:
            answer = fn()
        except exceptions.BaseNomadException as exc:
            resp = exc.nomad_resp
            status = int(getattr(resp, "status_code", 0) or 0)
            raise NomadApiError(job_id, status, str(getattr(resp, "text", resp))) from None
        return answer if isinstance(answer, dict) else {}


_UPDATE_NAMES = (("Place", "place"), ("Stop", "stop"), ("DestructiveUpdate", "replace"),
                 ("InPlaceUpdate", "update in place"), ("Canary", "canary"),
                 ("Migrate", "migrate"), ("Ignore", "unchanged"))


def summarize_plan(job_id: str, plan: Json, max_fields: int = 8) -> list[str]:
    """Readable lines for one plan answer: job change type, per-group allocation
    changes, the changed fields of edited groups (Nomad nests them: group ``Fields`` and
    ``Objects``, then ``Tasks[].Fields``/``Objects``; first ``max_fields``), placement
    failures, warnings."""
    diff = plan.get("Diff") or {}
    kind = diff.get("Type") or "None"
    lines = [f"job {job_id}: {'no changes' if kind == 'None' else kind.lower()}"]
    updates = (plan.get("Annotations") or {}).get("DesiredTGUpdates") or {}
    groups = {g.get("Name"): g for g in diff.get("TaskGroups") or []}
    for name in sorted(set(groups) | set(updates)):
        counts = updates.get(name) or {}
        what = ", ".join(f"{label} {counts[key]}" for key, label in _UPDATE_NAMES
                         if counts.get(key))
        lines.append(f"  group {name}: {what or 'no allocation changes'}")
        group = groups.get(name) or {}
        changes = group_changes(group) if group.get("Type") == "Edited" else []
        lines += [f"    ~ {path}: {old or '-'} -> {new or '-'}"
                  for path, old, new in changes[:max_fields]]
        if len(changes) > max_fields:
            lines.append(f"    ... and {len(changes) - max_fields} more field(s)")
    job_changes = _changes("", diff.get("Fields"), diff.get("Objects"))
    lines += [f"  job field {path}: {old or '-'} -> {new or '-'}"
              for path, old, new in job_changes[:max_fields]]
    for group, metric in sorted((plan.get("FailedTGAllocs") or {}).items()):
        lines.append(f"  ! group {group}: placement would fail ({_failure(metric)})")
    if plan.get("Warnings"):
        lines.append(f"  ! warnings: {str(plan['Warnings']).strip()}")
    return lines


Change = tuple[str, str, str]  # (path, old, new)


def group_changes(group: Json) -> list[Change]:
    """Every changed field of a task group diff, tasks included: ``Count``,
    ``Update.MinHealthyTime``, ``task tritonserver: Config.image`` ..."""
    out = _changes("", group.get("Fields"), group.get("Objects"))
    for task in group.get("Tasks") or []:
        if task.get("Type") != "None":
            out += [(f"task {task.get('Name')}: {path}", old, new)
                    for path, old, new in _changes("", task.get("Fields"), task.get("Objects"))]
    return out


def _changes(prefix: str, fields: Any, objects: Any) -> list[Change]:
    out = [(prefix + str(f.get("Name")), str(f.get("Old") or ""), str(f.get("New") or ""))
           for f in fields or [] if f.get("Type") not in (None, "None")]
    for obj in objects or []:
        if obj.get("Type") not in (None, "None"):
            out += _changes(f"{prefix}{obj.get('Name')}.", obj.get("Fields"), obj.get("Objects"))
    return out


def _failure(metric: Any) -> str:
    if not isinstance(metric, dict):
        return "no details"
    dims = metric.get("DimensionExhausted") or metric.get("ConstraintFiltered") or {}
    return ", ".join(f"{k}: {v}" for k, v in sorted(dims.items())) or "no feasible node"


def scaled_groups(request: Json) -> frozenset[str]:
    """Names of the request's groups with a ``scaling`` block (the autoscaler owns their count)."""
    return frozenset(str(g.get("Name")) for g in request["Job"].get("TaskGroups") or []
                     if g.get("Scaling") is not None)


def is_change(plan: Json, scaled: frozenset[str]) -> bool:
    """Does the plan change anything, a count-only difference on a scaled group aside?"""
    diff = plan.get("Diff") or {}
    if (diff.get("Type") or "None") in ("None", "Added", "Deleted"):
        return (diff.get("Type") or "None") != "None"
    if _changes("", diff.get("Fields"), diff.get("Objects")):
        return True
    for group in diff.get("TaskGroups") or []:
        changes = group_changes(group) if group.get("Type") == "Edited" else []
        if group.get("Type") in ("Added", "Deleted"):
            return True
        if any(not (path == "Count" and group.get("Name") in scaled) for path, _, _ in changes):
            return True
    return False


@dataclass(frozen=True)
class KeptCount:
    """A scaled group's count the deploy keeps from Nomad instead of the spec's."""

    group: str
    count: int
    spec_count: int


def keep_counts(request: Json, current: Json | None) -> tuple[Json, tuple[KeptCount, ...], bool]:
    """The request to plan and register, the counts kept, and whether to send
    ``PreserveCounts``. Pure.

    A scaled group keeps the count stored in Nomad (what the autoscaler set), clamped
    into the spec's new ``[min, max]``; unscaled groups take the spec's count.
    ``PreserveCounts`` (Nomad's ``updatePreservedValues``: every group keeps its stored
    count) is sent when that is exactly what the request says, i.e. whenever no clamp and
    no unscaled count change is involved. New jobs use the spec's counts.
    """
    if current is None:
        return request, (), False
    stored = {str(g.get("Name")): int(g.get("Count", 1)) for g in current.get("TaskGroups") or []}
    job = {**request["Job"], "TaskGroups": []}
    kept: list[KeptCount] = []
    for group in request["Job"].get("TaskGroups") or []:
        group = dict(group)
        name, scaling = str(group.get("Name")), group.get("Scaling")
        if scaling is not None and name in stored:
            low, high = int(scaling.get("Min", 0)), int(scaling.get("Max", stored[name]))
            count = min(max(stored[name], low), high)
            if count != int(group.get("Count", 1)):
                kept.append(KeptCount(name, count, int(group.get("Count", 1))))
            group["Count"] = count
        job["TaskGroups"].append(group)
    preserve = all(int(g["Count"]) == stored[str(g["Name"])] for g in job["TaskGroups"]
                   if str(g["Name"]) in stored)
    return {**request, "Job": job}, tuple(kept), preserve and bool(scaled_groups(request))


@dataclass(frozen=True)
class Planned:
    """One job ready to register: the request (counts kept) and its plan."""

    request: Json
    plan: Json
    preserve_counts: bool

    @property
    def job_id(self) -> str:
        return str(self.request["Job"]["ID"])

    def register_body(self) -> Json:
        """``EnforceIndex`` with the plan's ``JobModifyIndex`` (0 for a new job: it must not
        exist yet), ``PreserveCounts`` when counts are kept."""
        return {**self.request, "EnforceIndex": True,
                "JobModifyIndex": int(self.plan.get("JobModifyIndex") or 0),
                "PreserveCounts": self.preserve_counts}


@dataclass(frozen=True)
class DeployResult:
    planned: tuple[str, ...] = ()
    registered: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    aborted: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors and not self.aborted


def plan_job(request: Json, api: JobsApi, echo: Callable[[str], None]) -> Planned:
    """Read the stored job, keep autoscaled counts, plan, echo the summary. Raises
    NomadApiError."""
    job_id = str(request["Job"]["ID"])
    req, kept, preserve = keep_counts(request, api.current(job_id))
    planned = Planned(req, api.plan(req), preserve)
    for line in summarize_plan(job_id, planned.plan):
        echo(line)
    for k in kept:
        echo(f"  group {k.group}: count {k.count} kept from Nomad (autoscaled; the spec says "
             f"{k.spec_count})")
    return planned


def deploy(
    requests: Sequence[Json], api: JobsApi, *, dry_run: bool,
    confirm: Callable[[str], bool], echo: Callable[[str], None],
) -> DeployResult:
    """Plan every job (echoing summaries); unless ``dry_run`` or any plan failed, ask
    ``confirm`` once, then register every job whose plan shows a change (a count-only
    difference on a scaled group is none)."""
    planned: list[str] = []
    changed: list[Planned] = []
    errors: list[str] = []
    for req in requests:
        try:
            p = plan_job(req, api, echo)
        except NomadApiError as exc:
            errors.append(str(exc))
            echo(f"error: {exc}")
            continue
        planned.append(p.job_id)
        if is_change(p.plan, scaled_groups(p.request)):
            changed.append(p)
    if errors or dry_run:
        return DeployResult(tuple(planned), errors=tuple(errors))
    if not changed:
        echo("nothing to register: every job is up to date")
        return DeployResult(tuple(planned))
    names = ", ".join(p.job_id for p in changed)
    if not confirm(f"Register {len(changed)} job(s): {names}?"):
        echo("aborted: nothing registered")
        return DeployResult(tuple(planned), aborted=True)
    return _register(changed, api, echo, tuple(planned))


def _register(changed: Sequence[Planned], api: JobsApi, echo: Callable[[str], None],
              planned: tuple[str, ...]) -> DeployResult:
    """Register in order. An index conflict (the job changed since its plan) stops the
    deploy: that job and the ones after it are not registered."""
    registered: list[str] = []
    errors: list[str] = []
    for i, p in enumerate(changed):
        try:
            answer = api.register(p.register_body())
        except NomadApiError as exc:
            if exc.index_conflict:
                rest = [q.job_id for q in changed[i:]]
                msg = (f"job {p.job_id!r}: the job changed since the plan; run deploy again "
                       f"(not registered: {', '.join(rest)})")
                errors.append(msg)
                echo(f"error: {msg}")
                break
            errors.append(str(exc))
            echo(f"error: {exc}")
            continue
        registered.append(p.job_id)
        log.info("job registered", extra={"job": p.job_id, "eval_id": answer.get("EvalID")})
        echo(f"registered {p.job_id}: evaluation {answer.get('EvalID', '?')}")
    return DeployResult(planned, tuple(registered), tuple(errors))
