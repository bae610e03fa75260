"""``caravan deploy``: plan every job, show the diff, register after confirmation.

The Nomad I/O sits behind ``JobsApi`` (``plan``/``register`` of one
``{"Job": ...}`` request body); ``PythonNomadJobs`` is the production adapter
(python-nomad). Everything else here is pure: settings resolution (flag > env >
spec), plan summaries, and the deploy flow with injected ``confirm``/``echo``.

Errors: ``NomadApiError`` names the job and carries Nomad's status and message
(e.g. a 400 for an invalid job). The ACL token is held only in ``NomadSettings.token``
(excluded from ``repr``) and sent as ``X-Nomad-Token``; it is never printed or logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from caravan.spec import NomadSpec

log = logging.getLogger(__name__)
Json = dict[str, Any]


class NomadApiError(Exception):
    """Nomad refused a request about ``job_id``: HTTP ``status`` (0: no answer) and message."""

    def __init__(self, job_id: str, status: int, message: str) -> None:
        self.job_id, self.status, self.message = job_id, status, message.strip()
        if status:
            super().__init__(f"job {job_id!r}: Nomad refused it (HTTP {status}): {self.message}")
        else:
            super().__init__(f"job {job_id!r}: cannot reach Nomad: {self.message}")


class JobsApi(Protocol):
    """Nomad's jobs API, one job at a time. Both raise ``NomadApiError``. Not thread-safe."""

    def plan(self, request: Json) -> Json:
        """``POST /v1/job/:id/plan`` with ``Diff: true``; the plan answer."""
        ...

    def register(self, request: Json) -> Json:
        """``POST /v1/jobs``; the answer (``EvalID``, ``JobModifyIndex``...)."""
        ...


@dataclass(frozen=True)
class NomadSettings:
    """Where and how to reach Nomad. ``token`` never appears in ``repr``."""

    address: str
    namespace: str
    region: str | None = None
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    token: str | None = field(default=None, repr=False)


def resolve_settings(
    spec: NomadSpec, env: Mapping[str, str], read_file: Callable[[str], str],
    address: str | None = None, token_file: str | None = None,
) -> NomadSettings:
    """Flag > environment (NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT, NOMAD_CLIENT_CERT,
    NOMAD_CLIENT_KEY, NOMAD_NAMESPACE, NOMAD_REGION) > spec. A token file beats
    NOMAD_TOKEN when given as a flag; the spec's token file comes last.
    Raises ValueError naming the bad setting."""
    addr = address or env.get("NOMAD_ADDR") or spec.address
    parts = urlsplit(addr)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"nomad address {addr!r}: expected http(s)://HOST:PORT")
    token = None
    if token_file:
        token = _read_token(token_file, read_file)
    elif env.get("NOMAD_TOKEN"):
        token = env["NOMAD_TOKEN"].strip()
    elif spec.token_file:
        token = _read_token(spec.token_file, read_file)
    return NomadSettings(
        address=addr.rstrip("/"), namespace=env.get("NOMAD_NAMESPACE") or spec.namespace,
        region=env.get("NOMAD_REGION") or spec.region,
        ca_file=env.get("NOMAD_CACERT") or spec.ca_file,
        client_cert=env.get("NOMAD_CLIENT_CERT") or spec.client_cert,
        client_key=env.get("NOMAD_CLIENT_KEY") or spec.client_key, token=token,
    )


def _read_token(path: str, read_file: Callable[[str], str]) -> str:
    try:
        token = read_file(path).strip()
    except OSError as exc:
        raise ValueError(f"token file {path!r}: cannot read it ({exc.strerror})") from None
    if not token:
        raise ValueError(f"token file {path!r}: is empty")
    return token


class PythonNomadJobs:
    """``JobsApi`` over python-nomad. ``timeout_s`` bounds every HTTP request."""

    def __init__(self, settings: NomadSettings, timeout_s: float = 30.0) -> None:
        import nomad

        cert = (settings.client_cert, settings.client_key)
        https = settings.address.startswith("https://")
        self._client = nomad.Nomad(
            address=settings.address, namespace=settings.namespace, region=settings.region,
            token=settings.token, timeout=timeout_s,
            verify=settings.ca_file or https, cert=cert if all(cert) else (),
        )

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
    changes, edited fields (first ``max_fields``), placement failures, warnings."""
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
        fields = (groups.get(name) or {}).get("Fields") or []
        lines += [f"    ~ {f.get('Name')}: {f.get('Old') or '-'} -> {f.get('New') or '-'}"
                  for f in fields[:max_fields]]
        if len(fields) > max_fields:
            lines.append(f"    ... and {len(fields) - max_fields} more field(s)")
    lines += [f"  job field {f.get('Name')}: {f.get('Old') or '-'} -> {f.get('New') or '-'}"
              for f in (diff.get("Fields") or [])[:max_fields]]
    for group, metric in sorted((plan.get("FailedTGAllocs") or {}).items()):
        lines.append(f"  ! group {group}: placement would fail ({_failure(metric)})")
    if plan.get("Warnings"):
        lines.append(f"  ! warnings: {str(plan['Warnings']).strip()}")
    return lines


def _failure(metric: Any) -> str:
    if not isinstance(metric, dict):
        return "no details"
    dims = metric.get("DimensionExhausted") or metric.get("ConstraintFiltered") or {}
    return ", ".join(f"{k}: {v}" for k, v in sorted(dims.items())) or "no feasible node"


@dataclass(frozen=True)
class DeployResult:
    planned: tuple[str, ...] = ()
    registered: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    aborted: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors and not self.aborted


def deploy(
    requests: Sequence[Json], api: JobsApi, *, dry_run: bool,
    confirm: Callable[[str], bool], echo: Callable[[str], None],
) -> DeployResult:
    """Plan every job (echoing summaries); unless ``dry_run`` or any plan failed, ask
    ``confirm`` once, then register every job whose plan shows a change."""
    planned: list[str] = []
    changed: list[Json] = []
    errors: list[str] = []
    for req in requests:
        job_id = str(req["Job"]["ID"])
        try:
            plan = api.plan(req)
        except NomadApiError as exc:
            errors.append(str(exc))
            echo(f"error: {exc}")
            continue
        planned.append(job_id)
        for line in summarize_plan(job_id, plan):
            echo(line)
        if ((plan.get("Diff") or {}).get("Type") or "None") != "None":
            changed.append(req)
    if errors or dry_run:
        return DeployResult(tuple(planned), errors=tuple(errors))
    if not changed:
        echo("nothing to register: every job is up to date")
        return DeployResult(tuple(planned))
    names = ", ".join(str(r["Job"]["ID"]) for r in changed)
    if not confirm(f"Register {len(changed)} job(s): {names}?"):
        echo("aborted: nothing registered")
        return DeployResult(tuple(planned), aborted=True)
    return _register(changed, api, echo, tuple(planned))


def _register(changed: Sequence[Json], api: JobsApi, echo: Callable[[str], None],
              planned: tuple[str, ...]) -> DeployResult:
    registered: list[str] = []
    errors: list[str] = []
    for req in changed:
        job_id = str(req["Job"]["ID"])
        try:
            answer = api.register(req)
        except NomadApiError as exc:
            errors.append(str(exc))
            echo(f"error: {exc}")
            continue
        registered.append(job_id)
        log.info("job registered", extra={"job": job_id, "eval_id": answer.get("EvalID")})
        echo(f"registered {job_id}: evaluation {answer.get('EvalID', '?')}")
    return DeployResult(planned, tuple(registered), tuple(errors))
