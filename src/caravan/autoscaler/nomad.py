"""``NomadScaleTarget``: scale a model's Nomad job group through python-nomad.

python-nomad has no scale helper, so the generic ``Job.request`` is used (Nomad's
behaviour cited from hashicorp/nomad; tests run against ``tests/fakes/nomad/``):

* ``GET /v1/job/:id/scale`` (``Job.ScaleStatus``) -> ``TaskGroups[group]{Desired, Placed,
  Running, Healthy, Unhealthy, Events}``. Serving replicas are the healthy ones
  (``Running`` when nothing is placed);
  allocations placed but neither healthy nor unhealthy are *starting* (a model still
  loading, or a replica updated in place whose health Nomad reset) and count as
  capacity, so a 30-120 s model load does not trigger more scale-ups (nomad-autoscaler
  #540). ``Events[0].Time`` is the group's last scaling event (``last_scaled_at``).
  ``blocking_status`` is the same call as a blocking query (``index``, ``wait``).
* ``GET /v1/job/:id/deployment`` (latest deployment): while it is active the target is
  not ready and the round is skipped (nomad-autoscaler #273). Every count change of a
  group with an ``update`` block starts one (the reconciler updates the other replicas
  in place: ``createDeployment``), so the rounds after a scale are not ready until the
  new replicas are healthy.
* Shortfall, read only when ``Placed < Desired`` or ``Placed > Running``:
  ``GET /v1/job/:id/evaluations`` - the newest complete evaluation (of the deployed job
  version) with ``FailedTGAllocs[group]`` (the scheduler found no node:
  ``DimensionExhausted``; a ``blocked`` evaluation waits for capacity) - and
  ``GET /v1/job/:id/allocations`` - allocations ``pending`` for longer than
  ``pending_deadline_s``. It is *releasable* when the active deployment is the
  autoscaler's own: the group's latest scaling event carries meta ``caravan.autoscaler``
  and its evaluation's ``JobModifyIndex`` is the deployment's ``JobSpecModifyIndex``.
* ``POST /v1/job/:id/scale`` ``{Count, Target: {Group}, Message, Meta}``; a 400 about an
  active deployment raises ``NotReadyError`` (skip the round).
* ``release``: ``POST /v1/deployment/fail/:id`` (``Deployment.Fail``): with
  ``auto_revert`` Nomad registers the job's latest stable version again - the last count
  that was placed and healthy - instead of waiting for ``progress_deadline``. The ACL
  token needs ``fail-deployment`` (or ``submit-job``) besides ``scale-job`` and
  ``read-job``.

The client comes from ``caravan.nomad.client`` (the one place flags, environment and
spec become a python-nomad client, TLS verified). Thread-safe as far as python-nomad's
``requests.Session`` is (one request at a time per handler). Timeouts: ``timeout_s``
per plain request; blocking queries add ``wait_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from caravan.autoscaler.ports import NotReadyError, ScaleError, Shortfall, TargetStatus

if TYPE_CHECKING:
    import nomad

ACTIVE_DEPLOYMENT = frozenset(
    {"running", "pending", "paused", "blocked", "initializing", "unblocking"}
)
OWN_META = "caravan.autoscaler"  # scale-event meta key marking the autoscaler's own scales
NS = 1_000_000_000


def group_status(answer: Mapping[str, Any], job: str, group: str) -> TargetStatus:
    """A ``GET /v1/job/:id/scale`` answer -> TargetStatus for ``group``. Pure.

    Raises ScaleError when the group is missing.
    """
    groups = answer.get("TaskGroups") or {}
    if group not in groups:
        raise ScaleError(f"job {job!r} has no task group {group!r} (groups: {sorted(groups)})")
    g = groups[group]
    placed, healthy, unhealthy = (int(g.get(k, 0)) for k in ("Placed", "Healthy", "Unhealthy"))
    running, desired = int(g.get("Running", 0)), int(g.get("Desired", 0))
    events = g.get("Events") or []
    last = events[0].get("Time") if events else None
    last_s = int(last) / NS if isinstance(last, int | float) and last else None
    if answer.get("JobStopped"):
        return TargetStatus(0, 0, desired, ready=False, note="job is stopped")
    serving = healthy if placed > 0 else running
    starting = max(0, placed - healthy - unhealthy)
    return TargetStatus(serving, starting, desired, last_scaled_at=last_s)


def placement_failure(evals: Sequence[Mapping[str, Any]], group: str,
                      spec_index: int | None = None) -> str | None:
    """Why ``group`` could not be placed, from a job's evaluations, or None. Pure.

    The newest *complete* evaluation is the scheduler's latest placement attempt (a
    blocked evaluation copies its ``FailedTGAllocs`` and may stay "blocked" in the state
    store after Nomad untracks it: ``BlockedEvals.Untrack``, so blocked ones are not
    read). With ``spec_index`` (an active deployment's ``JobSpecModifyIndex``) it must have
    evaluated that job version, so an older failure never counts against a newer scale.
    """
    done = [e for e in evals if e.get("Status") == "complete"]
    newest = max(done, key=lambda e: int(e.get("CreateIndex", 0)), default=None)
    if newest is None or (spec_index is not None and newest.get("JobModifyIndex") != spec_index):
        return None
    metric = (newest.get("FailedTGAllocs") or {}).get(group)
    return "placement failed: " + _dimensions(metric) if isinstance(metric, dict) else None


def _dimensions(metric: Mapping[str, Any]) -> str:
    dims = metric.get("DimensionExhausted") or metric.get("ConstraintFiltered") or {}
    nodes = int(metric.get("NodesEvaluated", 0))
    what = ", ".join(f"{k} ({v} node(s))" for k, v in sorted(dims.items()))
    return what or f"no feasible node among {nodes}"


def stuck_pending(allocs: Sequence[Mapping[str, Any]], group: str, now: float,
                  deadline_s: float) -> int:
    """Allocations of ``group`` the scheduler placed but whose client has not started
    them for more than ``deadline_s`` seconds. Pure."""
    return sum(
        1 for a in allocs
        if a.get("TaskGroup") == group and a.get("DesiredStatus") == "run"
        and a.get("ClientStatus") == "pending"
        and now - int(a.get("CreateTime", 0)) / NS > deadline_s
    )


def own_deployment(group_scale: Mapping[str, Any], evals: Sequence[Mapping[str, Any]],
                   deployment: Mapping[str, Any] | None) -> bool:
    """Is the active ``deployment`` the one the autoscaler's latest scale started? Pure.

    The scale's evaluation carries the job version's ``JobModifyIndex`` (``Job.Scale``),
    and a deployment the ``JobSpecModifyIndex`` of the version it rolls out
    (``structs.NewDeployment``); a later register or revert is another version.
    """
    if not deployment or deployment.get("Status") not in ACTIVE_DEPLOYMENT:
        return False
    events = group_scale.get("Events") or []
    if not events or OWN_META not in (events[0].get("Meta") or {}):
        return False
    eval_id = events[0].get("EvalID")
    ev = next((e for e in evals if e.get("ID") == eval_id), None)
    spec_index = deployment.get("JobSpecModifyIndex")
    return ev is not None and spec_index is not None and ev.get("JobModifyIndex") == spec_index


class NomadScaleTarget:
    """Implements ``ScaleTarget`` for job groups. ``jobs``: model -> (job id, group).

    ``clock``: epoch seconds (allocation ages); ``pending_deadline_s``: how long an
    allocation may stay pending (image pull, client resources) before it is a shortfall.
    """

    def __init__(
        self, client: nomad.Nomad, jobs: Mapping[str, tuple[str, str]], timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time, pending_deadline_s: float = 600.0,
    ) -> None:
        self.client = client
        self.jobs = dict(jobs)
        self.timeout_s = timeout_s
        self.clock = clock
        self.pending_deadline_s = pending_deadline_s

    def _ids(self, model: str) -> tuple[str, str]:
        try:
            return self.jobs[model]
        except KeyError:
            raise ScaleError(
                f"no Nomad job configured for model {model!r} (known: {sorted(self.jobs)})"
            ) from None

    def status(self, model: str) -> TargetStatus:
        """Replica counts, readiness and shortfall (module doc). Raises ScaleError."""
        job, group = self._ids(model)
        answer = self._call(job, "get", "scale")
        st = group_status(answer, job, group)
        g = answer["TaskGroups"][group]
        deployment = self._call(job, "get", "deployment")
        deployment = deployment if isinstance(deployment, dict) else None
        shortfall = self._shortfall(job, group, g, deployment)
        if deployment is not None and deployment.get("Status") in ACTIVE_DEPLOYMENT:
            note = f"deployment {str(deployment.get('ID', ''))[:8]} is {deployment['Status']}"
            return TargetStatus(st.running, st.starting, st.desired, ready=False, note=note,
                                shortfall=shortfall, last_scaled_at=st.last_scaled_at)
        return TargetStatus(st.running, st.starting, st.desired, shortfall=shortfall,
                            last_scaled_at=st.last_scaled_at)

    def _shortfall(self, job: str, group: str, g: Mapping[str, Any],
                   deployment: Mapping[str, Any] | None) -> Shortfall | None:
        placed, running, desired = (int(g.get(k, 0)) for k in ("Placed", "Running", "Desired"))
        if placed >= desired and placed <= running:
            return None
        evals = self._call(job, "get", "evaluations") or []
        active = deployment is not None and deployment.get("Status") in ACTIVE_DEPLOYMENT
        spec_index = deployment.get("JobSpecModifyIndex") if active and deployment else None
        reason = placement_failure(evals, group, spec_index) if placed < desired else None
        stuck = 0
        if placed > running:
            allocs = self._call(job, "get", "allocations") or []
            stuck = stuck_pending(allocs, group, self.clock(), self.pending_deadline_s)
            if stuck and reason is None:
                reason = (f"{stuck} allocation(s) pending for more than "
                          f"{self.pending_deadline_s:g} s")
        if reason is None:
            return None
        releasable = own_deployment(g, evals, deployment)
        return Shortfall(f"{reason}; {placed - stuck} of {desired} placed", placed - stuck,
                         releasable)

    def blocking_status(self, model: str, index: int, wait_s: float) -> tuple[TargetStatus, int]:
        """Status once Nomad's index exceeds ``index`` (or after ``wait_s``), and the new index."""
        job, group = self._ids(model)
        params = {"index": str(index), "wait": f"{max(wait_s, 0):g}s"}
        resp = self._raw(job, "get", "scale", params=params, timeout=wait_s + self.timeout_s)
        new_index = int(resp.headers.get("X-Nomad-Index", index))
        return group_status(resp.json(), job, group), new_index

    def scale(self, model: str, count: int, reason: str, meta: Mapping[str, str]) -> None:
        """POST the new count. NotReadyError during a deployment, ScaleError otherwise."""
        if count < 0:
            raise ScaleError(f"count: must be >= 0 (got {count})")
        job, group = self._ids(model)
        body = {"Count": count, "Target": {"Group": group}, "Message": reason, "Meta": dict(meta)}
        self._call(job, "post", "scale", json=body)

    def release(self, model: str, reason: str) -> None:
        """Fail the autoscaler's own stuck deployment (Nomad auto-reverts the count)."""
        job, _group = self._ids(model)
        deployment = self._call(job, "get", "deployment")
        if not isinstance(deployment, dict) or deployment.get("Status") not in ACTIVE_DEPLOYMENT:
            return
        dep_id = str(deployment.get("ID"))
        try:
            self.client.deployment.fail_deployment(dep_id)
        except Exception as exc:  # python-nomad raises its own exception types
            raise ScaleError(f"failing deployment {dep_id[:8]} of job {job!r} ({reason}): "
                             f"{_text(exc)}") from None

    def _call(self, job: str, method: str, path: str, **kw: Any) -> Any:
        return self._raw(job, method, path, **kw).json()

    def _raw(self, job: str, method: str, path: str, **kw: Any) -> Any:
        from nomad.api import exceptions as nx

        kw.setdefault("timeout", self.timeout_s)
        try:
            return self.client.job.request(job, path, method=method, **kw)
        except nx.BadRequestNomadException as exc:
            text = _text(exc)
            if "deployment" in text.lower():
                raise NotReadyError(f"job {job!r}: {text}") from None
            raise ScaleError(f"{method.upper()} /v1/job/{job}/{path}: 400 {text}") from None
        except nx.URLNotFoundNomadException:
            raise ScaleError(f"job {job!r} not found in Nomad") from None
        except nx.URLNotAuthorizedNomadException:
            raise ScaleError(
                f"{method.upper()} /v1/job/{job}/{path}: permission denied (check NOMAD_TOKEN)"
            ) from None
        except (nx.BaseNomadException, nx.TimeoutNomadException) as exc:
            raise ScaleError(f"{method.upper()} /v1/job/{job}/{path}: {_text(exc)}") from None


def _text(exc: Any) -> str:
    resp = getattr(exc, "nomad_resp", None)
    text = getattr(resp, "text", None)
    return (text if isinstance(text, str) else str(resp if resp is not None else exc)).strip()

