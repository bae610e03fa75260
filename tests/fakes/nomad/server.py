"""The fake Nomad's HTTP handler and routing (``command/agent/http.go``)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fakes.nomad.api import ApiError

if TYPE_CHECKING:
    from tests.fakes.nomad.fake import FakeNomad


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    token: str | None


def parse_wait(text: str | None) -> float:
    """Nomad's ``wait`` duration ("30s", "5m", "250ms"); default 5 min, capped at 10 min."""
    if not text:
        return 300.0
    units = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0))
    for suffix, scale in units:
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return min(float(text[: -len(suffix)]) * scale, 600.0)
    raise ApiError(400, f"Invalid wait time {text!r}")


def handler_for(fake: FakeNomad) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as separate writes

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def do_PUT(self) -> None:
            self._serve()

        def _serve(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            token = self.headers.get("X-Nomad-Token")
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError as exc:
                return self._send(400, str(exc), None)
            with fake._cond:
                fake.requests.append(RecordedRequest(self.command, url.path, query, body, token))
                try:
                    fake._auth(token)
                    fake._catch_up()
                    answer = _route(fake, self.command, url.path, query, body)
                    self._send(200, answer, fake._index)
                except ApiError as err:
                    self._send(err.status, err.message, None)

        def _send(self, status: int, payload: Any, index: int | None) -> None:
            text = payload if isinstance(payload, str) and status != 200 else json.dumps(payload)
            data = text.encode()
            self.send_response(status)
            ctype = "text/plain; charset=utf-8" if status != 200 else "application/json"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            if index is not None:
                self.send_header("X-Nomad-Index", str(index))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _route(fake: FakeNomad, method: str, path: str, query: dict[str, str], body: Any) -> Any:
    """Dispatch one request. Called with ``fake._cond`` held."""
    ns = query.get("namespace") or "default"
    parts = [unquote(p) for p in path.strip("/").split("/")]
    write = method in ("POST", "PUT")
    if parts == ["v1", "jobs"] and write:
        return fake.register(query.get("namespace"), body, None)
    if parts[:2] == ["v1", "deployment"] and len(parts) >= 3:
        return _route_deployment(fake, method, parts[2:])
    if parts[:2] != ["v1", "job"] or len(parts) < 3:
        raise ApiError(404, f"Invalid URL path {path}")
    job_id, rest = parts[2], parts[3:]
    if not rest:
        if write:
            return fake.register(query.get("namespace"), body, job_id)
        return copy.deepcopy(fake._stored(ns, job_id))
    if rest == ["plan"] and write:
        return fake.plan(query.get("namespace"), job_id, body)
    if rest == ["scale"] and write:
        return fake.scale(ns, job_id, body)
    if rest == ["scale"]:
        fake._stored(ns, job_id)
        if "index" in query:
            fake.wait_index(int(query["index"]), parse_wait(query.get("wait")))
        return fake.scale_status(ns, job_id)
    return _route_job_reads(fake, ns, job_id, rest)


def _route_job_reads(fake: FakeNomad, ns: str, job_id: str, rest: list[str]) -> Any:
    key = (ns, job_id)
    if rest == ["deployment"]:
        dep = fake._latest_deployment(key)
        return None if dep is None else fake._deploy_json(dep)
    if rest == ["evaluations"]:
        return [copy.deepcopy(e) for e in fake._evals if (e["Namespace"], e["JobID"]) == key]
    if rest == ["allocations"]:
        return [fake._alloc_json(a) for a in fake._allocs if a.key == key]
    raise ApiError(404, f"Invalid URL path /v1/job/{job_id}/{'/'.join(rest)}")


def _route_deployment(fake: FakeNomad, method: str, rest: list[str]) -> Any:
    if rest[0] == "fail" and len(rest) == 2 and method in ("POST", "PUT"):
        return fake.fail_deployment(rest[1])
    if len(rest) == 1 and method == "GET":
        dep = fake._deployment_by_id(rest[0])
        if dep is None:
            raise ApiError(404, "deployment not found")
        return fake._deploy_json(dep)
    raise ApiError(404, f"Invalid URL path /v1/deployment/{'/'.join(rest)}")
