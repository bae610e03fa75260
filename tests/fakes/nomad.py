"""A faithful fake of the Nomad HTTP jobs API, for contract tests (test code only).

A real HTTP server on 127.0.0.1 in a daemon thread. It follows the documented API
(https://developer.hashicorp.com/nomad/api-docs/jobs):

  POST /v1/jobs, POST /v1/job/:id    register {Job, EnforceIndex, JobModifyIndex, ...}
                                     -> {EvalID, EvalCreateIndex, JobModifyIndex, Warnings, Index}
  POST /v1/job/:id/plan              {Job, Diff} -> {Diff, Annotations{DesiredTGUpdates},
                                     JobModifyIndex, FailedTGAllocs, Warnings, CreatedEvals}
  GET  /v1/job/:id                   the stored job (Version, JobModifyIndex, Status ...)
  POST /v1/job/:id/scale             {Count, Target{Group}, Message|Error, Meta, PolicyOverride}
                                     -> {EvalID, EvalCreateIndex, JobModifyIndex, Index};
                                     400 while a deployment is active
  GET  /v1/job/:id/deployment        latest deployment: {ID, JobID, Status: "running"} while
                                     one is active (start_deployment), else null
  GET  /v1/job/:id/scale             blocking query (index, wait; X-Nomad-Index header) ->
                                     {JobID, Namespace, JobStopped, TaskGroups{g: {Desired,
                                     Placed, Running, Healthy, Unhealthy, Events}}}

Errors use Nomad's plain-text bodies: 400 for an invalid request (validation messages
in Nomad's multierror format), 403 "Permission denied" for a wrong or missing
X-Nomad-Token when the fake was created with a token, 404 for an unknown job.

Test controls (thread-safe): ``start_deployment(job)`` / ``finish_deployment(job)``,
``set_allocations(job, group, placed=, running=, healthy=, unhealthy=)`` (simulate
allocations still starting), ``auto_allocate`` (when True, the default, every
register/scale places, runs and marks healthy ``Desired`` allocations at once).
``requests`` logs every request (method, path, query, body, token) for assertions.
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fakes.nomad_jobs import multierror, plan_diff, validation_errors


class ApiError(Exception):
    """An HTTP error answer: ``status`` and Nomad's plain-text ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class GroupStatus:
    placed: int = 0
    running: int = 0
    healthy: int = 0
    unhealthy: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    token: str | None


class FakeNomad:
    """The fake server. Use as a context manager or call ``start()``/``stop()``."""

    def __init__(self, token: str | None = None, host: str = "127.0.0.1") -> None:
        self.token = token
        self.auto_allocate = True
        self.requests: list[RecordedRequest] = []
        self._jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self._status: dict[tuple[str, str], dict[str, GroupStatus]] = {}
        self._deploying: set[tuple[str, str]] = set()
        self._index = 1
        self._cond = threading.Condition()
        self._server = ThreadingHTTPServer((host, 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeNomad:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeNomad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- test controls -------------------------------------------------------------
    def job(self, job_id: str, namespace: str = "default") -> dict[str, Any] | None:
        with self._cond:
            return copy.deepcopy(self._jobs.get((namespace, job_id)))

    def start_deployment(self, job_id: str, namespace: str = "default") -> None:
        with self._cond:
            self._deploying.add((namespace, job_id))

    def finish_deployment(self, job_id: str, namespace: str = "default") -> None:
        with self._cond:
            self._deploying.discard((namespace, job_id))

    def set_allocations(self, job_id: str, group: str, *, placed: int, running: int,
                        healthy: int, unhealthy: int = 0, namespace: str = "default") -> None:
        with self._cond:
            st = self._status[(namespace, job_id)][group]
            st.placed, st.running, st.healthy, st.unhealthy = placed, running, healthy, unhealthy
            self._bump()

    # ---- state changes (hold self._cond) -------------------------------------------
    def _bump(self) -> int:
        self._index += 1
        self._cond.notify_all()
        return self._index

    def _auth(self, token: str | None) -> None:
        if self.token is not None and token != self.token:
            raise ApiError(403, "Permission denied")

    def _stored(self, ns: str, job_id: str) -> dict[str, Any]:
        job = self._jobs.get((ns, job_id))
        if job is None:
            raise ApiError(404, "job not found")
        return job

    def _sync_status(self, key: tuple[str, str]) -> None:
        groups = self._status.setdefault(key, {})
        for tg in self._jobs[key]["TaskGroups"]:
            st = groups.setdefault(tg["Name"], GroupStatus())
            if self.auto_allocate:
                n = int(tg.get("Count", 1))
                st.placed = st.running = st.healthy = n
                st.unhealthy = 0

    def register(self, ns: str, body: Any, path_id: str | None) -> dict[str, Any]:
        job = body.get("Job") if isinstance(body, dict) else None
        errs = validation_errors(job)
        if errs:
            raise ApiError(400, multierror(errs))
        assert isinstance(job, dict)
        if path_id is not None and path_id != job["ID"]:
            raise ApiError(400, "Job ID does not match name")
        key = (ns, job["ID"])
        old = self._jobs.get(key)
        current = old["JobModifyIndex"] if old else 0
        if body.get("EnforceIndex") and int(body.get("JobModifyIndex", 0)) != current:
            raise ApiError(400, f"Enforcing job modify index {body.get('JobModifyIndex')}: "
                                f"job exists with conflicting job modify index: {current}")
        index = self._bump()
        stored = copy.deepcopy(job)
        stored.update(Namespace=ns, Version=(old["Version"] + 1) if old else 0,
                      JobModifyIndex=index, ModifyIndex=index, Status="running", Stop=False,
                      CreateIndex=old["CreateIndex"] if old else index)
        self._jobs[key] = stored
        self._sync_status(key)
        return self._eval_answer(index)

    def _eval_answer(self, index: int) -> dict[str, Any]:
        return {"EvalID": str(uuid.uuid4()), "EvalCreateIndex": index, "JobModifyIndex": index,
                "Warnings": "", "Index": index, "KnownLeader": False, "LastContact": 0}

    def plan(self, ns: str, job_id: str, body: Any) -> dict[str, Any]:
        job = body.get("Job") if isinstance(body, dict) else None
        errs = validation_errors(job)
        if errs:
            raise ApiError(400, multierror(errs))
        assert isinstance(job, dict)
        if job["ID"] != job_id:
            raise ApiError(400, "Job ID does not match")
        old = self._jobs.get((ns, job_id))
        diff, updates = plan_diff(old, job)
        return {"Diff": diff if body.get("Diff") else None,
                "Annotations": {"DesiredTGUpdates": updates, "PreemptedAllocs": None},
                "JobModifyIndex": old["JobModifyIndex"] if old else 0, "FailedTGAllocs": None,
                "CreatedEvals": None, "NextPeriodicLaunch": None, "Warnings": "", "Index": 0}

    def scale(self, ns: str, job_id: str, body: Any) -> dict[str, Any]:
        job = self._stored(ns, job_id)
        group = ((body or {}).get("Target") or {}).get("Group")
        tg = next((g for g in job["TaskGroups"] if g["Name"] == group), None)
        if tg is None:
            raise ApiError(400, f"task group {group!r} specified for scaling does not exist in job")
        count = body.get("Count")
        if count is not None and (ns, job_id) in self._deploying:
            raise ApiError(400, "job scaling blocked due to active deployment")
        if count is not None:
            _check_count(int(count), tg)
        index = self._bump()
        prev = int(tg.get("Count", 1))
        if count is not None:
            tg["Count"] = int(count)
            job.update(Version=job["Version"] + 1, JobModifyIndex=index, ModifyIndex=index)
            self._sync_status((ns, job_id))
        event = {"Count": count, "PreviousCount": prev, "Message": body.get("Message", ""),
                 "Error": bool(body.get("Error")), "Meta": body.get("Meta"),
                 "Time": time.time_ns(), "EvalID": None, "CreateIndex": index}
        self._status[(ns, job_id)][group].events.insert(0, event)
        return self._eval_answer(index)

    def scale_status(self, ns: str, job_id: str) -> dict[str, Any]:
        job = self._stored(ns, job_id)
        groups = {}
        for tg in job["TaskGroups"]:
            st = self._status[(ns, job_id)][tg["Name"]]
            groups[tg["Name"]] = {"Desired": int(tg.get("Count", 1)), "Placed": st.placed,
                                  "Running": st.running, "Healthy": st.healthy,
                                  "Unhealthy": st.unhealthy, "Events": st.events or None}
        return {"JobID": job_id, "Namespace": ns, "JobStopped": bool(job.get("Stop")),
                "JobCreateIndex": job["CreateIndex"], "JobModifyIndex": job["JobModifyIndex"],
                "TaskGroups": groups}

    def wait_index(self, index: int, wait_s: float) -> None:
        """Blocking-query wait: until the state index exceeds ``index`` or ``wait_s`` passes."""
        deadline = time.monotonic() + wait_s
        while self._index <= index:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)


def _check_count(count: int, tg: dict[str, Any]) -> None:
    if count < 0:
        raise ApiError(400, "scaling action count can't be negative")
    policy = tg.get("Scaling") or {}
    if policy.get("Max") is not None and count > int(policy["Max"]):
        raise ApiError(400, f"group count was greater than scaling policy maximum: "
                            f"{count} > {policy['Max']}")
    if policy.get("Min") is not None and count < int(policy["Min"]):
        raise ApiError(400, f"group count was less than scaling policy minimum: "
                            f"{count} < {policy['Min']}")


def parse_wait(text: str | None) -> float:
    """Nomad's ``wait`` duration ("30s", "5m", "250ms"); default 5 min, capped at 10 min."""
    if not text:
        return 300.0
    units = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0))
    for suffix, scale in units:
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return min(float(text[: -len(suffix)]) * scale, 600.0)
    raise ApiError(400, f"Invalid wait time {text!r}")


def _handler_for(fake: FakeNomad) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _serve(self) -> None:
            method = self.command
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            token = self.headers.get("X-Nomad-Token")
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError as exc:
                return self._send(400, f"failed to decode request body: {exc}", None)
            with fake._cond:
                fake.requests.append(RecordedRequest(method, url.path, query, body, token))
                try:
                    fake._auth(token)
                    answer = _route(fake, method, url.path, query, body)
                    self._send(200, answer, fake._index)
                except ApiError as err:
                    self._send(err.status, err.message, None)

        def _send(self, status: int, payload: Any, index: int | None) -> None:
            text = payload if isinstance(payload, str) else json.dumps(payload)
            data = text.encode()
            self.send_response(status)
            ctype = "text/plain; charset=utf-8" if isinstance(payload, str) else "application/json"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            if index is not None:
                self.send_header("X-Nomad-Index", str(index))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _route(fake: FakeNomad, method: str, path: str, query: dict[str, str], body: Any) -> Any:
    """Dispatch one request. Called with ``fake._cond`` held."""
    ns = query.get("namespace", "default")
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if parts[:2] == ["v1", "jobs"] and len(parts) == 2 and method == "POST":
        return fake.register(ns, body, None)
    if parts[:2] != ["v1", "job"] or len(parts) < 3:
        raise ApiError(404, f"Invalid URL path {path}")
    job_id, rest = parts[2], parts[3:]
    if not rest and method == "POST":
        return fake.register(ns, body, job_id)
    if not rest and method == "GET":
        return copy.deepcopy(fake._stored(ns, job_id))
    if rest == ["plan"] and method == "POST":
        return fake.plan(ns, job_id, body)
    if rest == ["scale"] and method == "POST":
        return fake.scale(ns, job_id, body)
    if rest == ["deployment"] and method == "GET":  # latest deployment (null when none)
        fake._stored(ns, job_id)
        if (ns, job_id) not in fake._deploying:
            return None
        return {"ID": f"deploy-{job_id}", "JobID": job_id, "Namespace": ns, "Status": "running",
                "StatusDescription": "Deployment is running"}
    if rest == ["scale"] and method == "GET":
        fake._stored(ns, job_id)
        if "index" in query:
            fake.wait_index(int(query["index"]), parse_wait(query.get("wait")))
        return fake.scale_status(ns, job_id)
    raise ApiError(404, f"Invalid method or path {method} {path}")
