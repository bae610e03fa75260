"""A faithful, small fake of the Consul HTTP API parts Caravan uses. Test code only.

Served by a real HTTP server on 127.0.0.1 (free port) in a thread, so py-consul
talks to it over TCP exactly as it would to an agent. Follows the documented API:

- ``PUT /v1/agent/service/register`` (``Name`` required, ``ID`` defaults to it;
  ``Check``/``Checks`` get ids ``service:<id>`` / ``service:<id>:<n>`` and start
  ``critical`` unless ``Status`` is given), ``PUT /v1/agent/service/deregister/:id``,
  ``PUT /v1/agent/service/maintenance/:id?enable=&reason=`` (a critical check
  ``_service_maintenance:<id>``), ``PUT /v1/agent/check/{pass,warn,fail}/:id``
  and ``PUT /v1/agent/check/update/:id`` ``{Status, Output}``.
- ``GET /v1/health/service/:name`` -> ``[{Node, Service, Checks}]`` (node check
  ``serfHealth`` included) with ``?passing`` (no value counts as true), blocking
  ``?index=&wait=`` (wait default 5m, max 10m, plus up to wait/16 jitter; Go
  durations), headers ``X-Consul-Index``, ``X-Consul-KnownLeader``,
  ``X-Consul-LastContact``.
- ACLs when created with a token (``X-Consul-Token``, ``Authorization: Bearer``
  or ``?token=``): an unknown token gets 403 ``ACL not found``; no token is the
  anonymous token (default deny): writes get 403 ``Permission denied``, reads
  are filtered to ``[]`` with ``X-Consul-Results-Filtered-By-ACLs: true``.

Test controls: ``stop()`` (connections refused, blocked queries dropped),
``restart()`` (same port, state kept), ``reset_index()`` (index goes backwards),
``inject_raw()`` (a malformed entry), ``stall()`` (accept but never answer),
and ``requests`` (a log of every request served).
"""

from __future__ import annotations

import json
import random
import re
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from caravan.local.process import free_port

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
DEFAULT_WAIT_S, MAX_WAIT_S = 300.0, 600.0
STATUSES = ("passing", "warning", "critical")


def parse_duration(text: str) -> float:
    """Go duration ("10s", "100ms", "1m30s") -> seconds; ValueError if malformed."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(text)
    return sum(float(n) * _UNITS[u] for n, u in parts)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    token: str | None
    at: float  # time.monotonic()


class _HttpError(Exception):
    def __init__(self, code: int, body: str) -> None:
        super().__init__(body)
        self.code, self.body = code, body


class ConsulFake:
    """One fake agent+catalog. Thread-safe; helpers work whether running or not."""

    def __init__(self, token: str | None = None, node: str = "node-1",
                 node_address: str = "127.0.0.1", datacenter: str = "dc1", seed: int = 0) -> None:
        self.token = token
        self.datacenter = datacenter
        self.default_node = node
        self.requests: list[Request] = []
        self._cond = threading.Condition()
        self._rng = random.Random(seed)
        self._index = 10
        self._nodes: dict[str, str] = {node: node_address}
        self._services: dict[str, dict[str, Any]] = {}  # id -> definition (+ "_node")
        self._checks: dict[str, dict[str, Any]] = {}  # check id -> check
        self._svc_index: dict[str, int] = {}  # service name -> modify index
        self._raw: dict[str, list[Any]] = {}
        self._generation = 0  # bumped by stop(): blocked requests of old generations are dropped
        self._stalled = False
        self._server: ThreadingHTTPServer | None = None
        self.port = 0

    # ---- lifecycle -------------------------------------------------------------
    def start(self) -> str:
        """Listen (on a free port the first time, the same port after) -> base URL."""
        if self._server is not None:
            return self.base_url
        self.port = self.port or free_port()
        server = _QuietServer(("127.0.0.1", self.port), _Handler)
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, args=(0.05,), name="consul-fake",
                         daemon=True).start()
        self._server = server
        return self.base_url

    def stop(self) -> None:
        """Stop listening (connections refused) and drop every blocked query."""
        server, self._server = self._server, None
        with self._cond:
            self._generation += 1
            self._cond.notify_all()
        if server is not None:
            server.shutdown()
            server.server_close()

    def restart(self) -> str:
        self.stop()
        return self.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> ConsulFake:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- state changes (also reached through the HTTP API) ---------------------
    def register(self, name: str, service_id: str | None = None, *, port: int = 8001,
                 address: str = "", tags: list[str] | None = None,
                 meta: dict[str, str] | None = None,
                 weights: dict[str, int] | None = None, check_status: str | None = "passing",
                 node: str | None = None, node_address: str = "127.0.0.1") -> str:
        """Register a service instance; ``check_status`` None registers no check."""
        body: dict[str, Any] = {"Name": name, "ID": service_id or name, "Port": port,
                                "Address": address, "Tags": tags or [], "Meta": meta or {}}
        if weights is not None:
            body["Weights"] = weights
        if check_status is not None:
            body["Check"] = {"TTL": "30s", "Status": check_status}
        node = node or self.default_node
        with self._cond:
            self._nodes.setdefault(node, node_address)
        return self._register(body, node)

    def _register(self, raw_body: dict[str, Any], node: str) -> str:
        body = _fold(raw_body)  # Consul decodes JSON field names case-insensitively
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise _HttpError(400, "Missing service name")
        sid = body.get("id") or name
        listed = body.get("checks") or ([body["check"]] if body.get("check") else [])
        checks = [_fold(c) for c in listed]
        weights = _fold(body.get("weights") or {"passing": 1, "warning": 1})
        with self._cond:
            self._drop_service(sid)
            idx = self._bump(name)
            self._services[sid] = {
                "ID": sid, "Service": name, "Tags": list(body.get("tags") or []),
                "Address": body.get("address", ""), "Meta": dict(body.get("meta") or {}),
                "Port": body.get("port", 0), "EnableTagOverride": False,
                "Weights": {"Passing": weights.get("passing", 1),
                            "Warning": weights.get("warning", 1)},
                "CreateIndex": idx, "ModifyIndex": idx, "_node": node,
            }
            for n, chk in enumerate(checks, start=1):
                default = f"service:{sid}" if len(checks) == 1 else f"service:{sid}:{n}"
                cid = chk.get("checkid") or default
                self._add_check(cid, sid, chk.get("name") or f"Service '{name}' check",
                                chk.get("status", "critical"), "", node)
        return str(sid)

    def deregister(self, service_id: str) -> None:
        with self._cond:
            if service_id not in self._services:
                raise _HttpError(404, f'Unknown service ID "{service_id}". Ensure that the '
                                      "service ID is passed, not the service name.")
            self._bump(self._services[service_id]["Service"])
            self._drop_service(service_id)

    def set_check(self, service_id: str, status: str, output: str = "") -> None:
        """Set every (non-maintenance) check of ``service_id`` to ``status``."""
        with self._cond:
            ids = [c for c, v in self._checks.items()
                   if v["ServiceID"] == service_id and not c.startswith("_service_maintenance:")]
        if not ids:
            raise KeyError(f"service {service_id!r} has no checks")
        for cid in ids:
            self.update_check(cid, status, output)

    def update_check(self, check_id: str, status: str, output: str = "") -> None:
        if status not in STATUSES:
            raise _HttpError(400, f'Invalid check status: "{status}"')
        with self._cond:
            check = self._checks.get(check_id)
            if check is None:
                raise _HttpError(404, f'Unknown check ID "{check_id}"')
            idx = self._bump(check["ServiceName"])
            check.update(Status=status, Output=output, ModifyIndex=idx)

    def maintenance(self, service_id: str, on: bool, reason: str = "") -> None:
        with self._cond:
            svc = self._services.get(service_id)
            if svc is None:
                raise _HttpError(404, f'Unknown service ID "{service_id}"')
            cid = f"_service_maintenance:{service_id}"
            if on:
                notes = reason or ("Maintenance mode is enabled for this service, but no reason "
                                   "was provided. This is a default message.")
                self._add_check(cid, service_id, "Service Maintenance Mode", "critical", notes,
                                svc["_node"])
            elif self._checks.pop(cid, None) is not None:
                self._bump(svc["Service"])

    def inject_raw(self, service: str, entry: Any) -> None:
        """Add ``entry`` verbatim to ``service``'s health response (malformed-data tests)."""
        with self._cond:
            self._raw.setdefault(service, []).append(entry)
            self._bump(service)

    def reset_index(self, to: int = 1) -> None:
        """Make every index go backwards (as after a raft snapshot restore)."""
        with self._cond:
            self._index = to
            self._svc_index = dict.fromkeys(self._svc_index, to)
            self._cond.notify_all()

    def stall(self, on: bool = True) -> None:
        """While on, health queries are accepted but never answered (until stop/off)."""
        with self._cond:
            self._stalled = on
            self._cond.notify_all()

    def served(self, path_prefix: str = "/v1/health/service/", since: float = 0.0) -> int:
        """How many requests under ``path_prefix`` arrived at or after ``since`` (monotonic)."""
        with self._cond:
            return sum(1 for r in self.requests if r.path.startswith(path_prefix) and r.at >= since)

    # ---- internals (caller holds self._cond) -----------------------------------
    def _bump(self, service: str) -> int:
        self._index += 1
        self._svc_index[service] = self._index
        self._cond.notify_all()
        return self._index

    def _add_check(self, cid: str, sid: str, name: str, status: str, notes: str, node: str) -> None:
        idx = self._bump(self._services[sid]["Service"])
        self._checks[cid] = {"Node": node, "CheckID": cid, "Name": name, "Status": status,
                             "Notes": notes, "Output": "", "ServiceID": sid,
                             "ServiceName": self._services[sid]["Service"], "ServiceTags": [],
                             "Type": "ttl" if cid.startswith("service:") else "",
                             "CreateIndex": idx, "ModifyIndex": idx}

    def _drop_service(self, sid: str) -> None:
        self._services.pop(sid, None)
        for cid in [c for c, v in self._checks.items() if v["ServiceID"] == sid]:
            del self._checks[cid]

    def _entries(self, service: str, passing: bool) -> list[Any]:
        out: list[Any] = []
        for sid, svc in sorted(self._services.items(), key=lambda kv: (kv[1]["_node"], kv[0])):
            if svc["Service"] != service:
                continue
            node = svc["_node"]
            checks = [self._serf_check(node)] + [
                dict(c) for c in self._checks.values() if c["ServiceID"] == sid]
            if passing and any(c["Status"] != "passing" for c in checks):
                continue
            out.append({
                "Node": {"ID": "", "Node": node, "Address": self._nodes[node],
                         "Datacenter": self.datacenter, "TaggedAddresses": {}, "Meta": {}},
                "Service": {k: v for k, v in svc.items() if not k.startswith("_")},
                "Checks": checks,
            })
        return out + list(self._raw.get(service, []))

    def _serf_check(self, node: str) -> dict[str, Any]:
        return {"Node": node, "CheckID": "serfHealth", "Name": "Serf Health Status",
                "Status": "passing", "Notes": "", "Output": "Agent alive and reachable",
                "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": ""}

    def _health(self, service: str, query: dict[str, list[str]],
                generation: int) -> tuple[int, Any]:
        """Serve one (maybe blocking) health query -> (index, body); None body = drop."""
        min_index, wait_s = _blocking_params(query)
        passing = _flag(query, "passing")
        deadline = time.monotonic() + wait_s + self._rng.uniform(0, wait_s / 16)
        with self._cond:
            while generation == self._generation and (
                self._stalled or (min_index > 0 and self._svc_index.get(service, 1) <= min_index)
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0 and not self._stalled:
                    break
                self._cond.wait(remaining if remaining > 0 else 0.05)
            if generation != self._generation:
                return 0, None
            return self._svc_index.get(service, 1), self._entries(service, passing)


def _fold(obj: dict[str, Any]) -> dict[str, Any]:
    """Top-level keys lower-cased, ``_`` dropped (``CheckID``, ``checkid``, ``check_id``)."""
    return {k.lower().replace("_", ""): v for k, v in obj.items()}


def _blocking_params(query: dict[str, list[str]]) -> tuple[int, float]:
    raw_index = query.get("index", ["0"])[0]
    if not raw_index.isdigit():
        raise _HttpError(400, "Invalid index")
    raw_wait = query.get("wait", [""])[0]
    try:
        wait_s = parse_duration(raw_wait) if raw_wait else DEFAULT_WAIT_S
    except ValueError:
        raise _HttpError(400, "Invalid wait time") from None
    return int(raw_index), min(wait_s, MAX_WAIT_S)


def _flag(query: dict[str, list[str]], name: str) -> bool:
    if name not in query:
        return False
    value = query[name][0]
    if value == "":
        return True
    if value.lower() in ("1", "true", "t"):
        return True
    if value.lower() in ("0", "false", "f"):
        return False
    raise _HttpError(400, f"Invalid value for ?{name}")


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up (a timed-out blocking query) is normal, as for real Consul."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server_version = "consul-fake"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    @property
    def fake(self) -> ConsulFake:
        return self.server.fake  # type: ignore[attr-defined,no-any-return]

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        fake = self.fake
        generation = fake._generation
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        token = self._token(query)
        with fake._cond:
            fake.requests.append(Request(method, url.path, query, token, time.monotonic()))
        try:
            self._route(method, url.path, query, token, generation)
        except _HttpError as err:
            self._reply(err.code, err.body.encode(), "text/plain; charset=utf-8")

    def _token(self, query: dict[str, list[str]]) -> str | None:
        auth = self.headers.get("Authorization", "")
        bearer = auth[7:] if auth.startswith("Bearer ") else None
        return self.headers.get("X-Consul-Token") or bearer or query.get("token", [None])[0]

    def _route(self, method: str, path: str, query: dict[str, list[str]], token: str | None,
               generation: int) -> None:
        fake = self.fake
        if fake.token is not None and token is not None and token != fake.token:
            raise _HttpError(403, "ACL not found")
        anonymous = fake.token is not None and token is None
        if path.startswith("/v1/health/service/") and method == "GET":
            index, body = fake._health(path.removeprefix("/v1/health/service/"), query, generation)
            if body is None:
                self.close_connection = True  # dropped: the client sees the connection close
                return
            extra = {"X-Consul-Results-Filtered-By-ACLs": "true"} if anonymous and body else {}
            self._json(200, [] if anonymous else body, index, extra)
            return
        if method != "PUT" or not path.startswith("/v1/agent/"):
            code = 405 if path.startswith("/v1/") else 404
            raise _HttpError(code, "method or path not supported")
        if anonymous:
            raise _HttpError(403, "Permission denied")
        self._agent(path.removeprefix("/v1/agent/"), query)
        self._reply(200, b"", "text/plain")

    def _agent(self, rest: str, query: dict[str, list[str]]) -> None:
        fake = self.fake
        kind, _, target = rest.partition("/")
        action, _, ident = target.partition("/")
        if (kind, action) == ("service", "register"):
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError as exc:
                raise _HttpError(400, f"Request decode failed: {exc}") from None
            fake._register(body, fake.default_node)
        elif (kind, action) == ("service", "deregister"):
            fake.deregister(ident)
        elif (kind, action) == ("service", "maintenance"):
            if "enable" not in query:
                raise _HttpError(400, "Missing value for enable")
            fake.maintenance(ident, _flag(query, "enable"), query.get("reason", [""])[0])
        elif kind == "check" and action in ("pass", "warn", "fail"):
            status = {"pass": "passing", "warn": "warning", "fail": "critical"}[action]
            fake.update_check(ident, status, query.get("note", [""])[0])
        elif (kind, action) == ("check", "update"):
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            fake.update_check(ident, body.get("Status", ""), body.get("Output", ""))
        else:
            raise _HttpError(404, f"unsupported agent endpoint /v1/agent/{rest}")

    def _json(self, code: int, body: Any, index: int, extra: dict[str, str]) -> None:
        headers = {"X-Consul-Index": str(index), "X-Consul-KnownLeader": "true",
                   "X-Consul-LastContact": "0", "X-Consul-Effective-Consistency": "leader", **extra}
        self._reply(code, json.dumps(body).encode(), "application/json", headers)

    def _reply(self, code: int, body: bytes, ctype: str,
               headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
