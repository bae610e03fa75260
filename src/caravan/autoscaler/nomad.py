"""``NomadScaleTarget``: scale a model's Nomad job group through python-nomad.

python-nomad has no scale helper, so the generic ``Job.request`` is used:

* ``GET  /v1/job/:id/scale`` -> ``TaskGroups[group]{Desired, Placed, Running, Healthy,
  Unhealthy}``. Serving replicas are the healthy ones (``Running`` when no deployment
  ever tracked health, i.e. ``Placed`` is 0); allocations placed but neither healthy
  nor unhealthy are *starting* (a model still loading) and count as capacity, so a
  30-120 s model load does not trigger more scale-ups (nomad-autoscaler #540).
  ``blocking_status`` is the same call as a blocking query (``index``, ``wait``).
* ``GET  /v1/job/:id/deployment`` (latest deployment): while it is active the
  target is not ready and the round is skipped (nomad-autoscaler #273).
* ``POST /v1/job/:id/scale`` ``{Count, Target: {Group}, Message, Meta}``; a 400 that
  mentions a deployment raises ``NotReadyError`` (skip the round).

Thread-safe as far as python-nomad's ``requests.Session`` is (one request at a time
per handler). Timeouts: ``timeout_s`` per plain request; blocking queries add ``wait_s``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caravan.autoscaler.ports import NotReadyError, ScaleError, TargetStatus

if TYPE_CHECKING:
    import nomad

    from caravan.spec import NomadSpec

ACTIVE_DEPLOYMENT = frozenset(
    {"running", "pending", "paused", "blocked", "initializing", "unblocking"}
)


def group_status(answer: Mapping[str, Any], job: str, group: str) -> TargetStatus:
    """A ``GET /v1/job/:id/scale`` answer -> TargetStatus for ``group``. Pure.

    Raises ScaleError when the group is missing.
    """
    groups = answer.get("TaskGroups") or {}
    if group not in groups:
        raise ScaleError(f"job {job!r} has no task group {group!r} (groups: {sorted(groups)})")
    g = groups[group]
    placed, healthy, unhealthy = (
        int(g.get("Placed", 0)),
        int(g.get("Healthy", 0)),
        int(g.get("Unhealthy", 0)),
    )
    running = int(g.get("Running", 0))
    if answer.get("JobStopped"):
        return TargetStatus(0, 0, int(g.get("Desired", 0)), ready=False, note="job is stopped")
    serving = healthy if placed > 0 else running
    starting = max(0, placed - healthy - unhealthy)
    return TargetStatus(running=serving, starting=starting, desired=int(g.get("Desired", 0)))


class NomadScaleTarget:
    """Implements ``ScaleTarget`` for job groups. ``jobs``: model -> (job id, group)."""

    def __init__(
        self, client: nomad.Nomad, jobs: Mapping[str, tuple[str, str]], timeout_s: float = 10.0
    ) -> None:
        self.client = client
        self.jobs = dict(jobs)
        self.timeout_s = timeout_s

    def _ids(self, model: str) -> tuple[str, str]:
        try:
            return self.jobs[model]
        except KeyError:
            raise ScaleError(
                f"no Nomad job configured for model {model!r} (known: {sorted(self.jobs)})"
            ) from None

    def status(self, model: str) -> TargetStatus:
        """Replica counts and readiness (see module doc). Raises ScaleError on API errors."""
        job, group = self._ids(model)
        answer = self._call(job, "get", "scale")
        st = group_status(answer, job, group)
        deployment = self._call(job, "get", "deployment")
        if isinstance(deployment, dict) and deployment.get("Status") in ACTIVE_DEPLOYMENT:
            note = f"deployment {str(deployment.get('ID', ''))[:8]} is {deployment['Status']}"
            return TargetStatus(st.running, st.starting, st.desired, ready=False, note=note)
        return st

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


def nomad_client(
    spec: NomadSpec, address: str | None = None, timeout_s: float = 10.0
) -> nomad.Nomad:
    """A python-nomad client for ``spec`` (address overridable). The ACL token comes from
    ``spec.token_file`` or the NOMAD_TOKEN environment variable, never from the spec itself."""
    import nomad as nomad_lib

    token = os.environ.get("NOMAD_TOKEN")
    if spec.token_file:
        token = Path(spec.token_file).read_text().strip()
    return nomad_lib.Nomad(
        address=(address or spec.address).rstrip("/"),
        namespace=spec.namespace,
        region=spec.region,
        token=token,
        timeout=int(max(timeout_s, 1)),
    )
