"""A fake of the Consul HTTP API parts Caravan uses, following Consul's source. Test code only.

Served by a real HTTP/1.1 server on 127.0.0.1 (free port) in a thread, so py-consul talks
to it over TCP (keep-alive included) exactly as it would to a local agent. Each rule names
the Consul function it follows (paths in hashicorp/consul unless said otherwise).

Endpoints
    ``GET /v1/health/service/:name`` (``agent/health_endpoint.go`` ``healthServiceNodes``) ->
    ``[{Node, Service, Checks}]``; ``?passing`` parsed like Go's ``strconv.ParseBool`` (bare
    flag = true; anything else: 400 ``Invalid value for ?passing``), ``?dc``, ``?stale``,
    blocking ``?index=&wait=`` (``agent/http.go`` ``parseWait``: 400 ``Invalid wait time`` /
    ``Invalid index``; wait default 5m, max 10m, plus up to wait/16 jitter). Agent endpoints:
    ``PUT /v1/agent/service/register`` (``Name`` required; ``ID`` defaults to it; ``Check``/
    ``Checks`` get ids ``service:<id>`` / ``service:<id>:<n>`` and start ``critical`` unless
    ``Status`` is given; ``Weights`` checked by ``agent/structs/structs.go`` ``ValidateWeights``),
    ``PUT /v1/agent/service/deregister/:id``, ``PUT /v1/agent/service/maintenance/:id``,
    ``PUT /v1/agent/maintenance`` (node maintenance), ``PUT /v1/agent/check/{pass,warn,fail}/:id``,
    ``PUT /v1/agent/check/update/:id``, ``GET /v1/agent/self`` (needs ``agent:read``; what
    Prometheus asks when its config names no datacenter). Agent endpoints act on the
    agent's own node. Datacenter-wide reads, blocking too (``blockingquery.Query``): ``GET
    /v1/health/state/:state`` (``Health.ChecksInState``: ``any`` or one status, 400 for
    another), ``GET /v1/catalog/services`` (``Catalog.ListServices``: name -> tags) and
    ``GET /v1/catalog/nodes`` (``Catalog.ListNodes``); the first two take the ``?filter``
    subset discovery sends (``ServiceName == "a" or ...``; anything else is 400), applied
    before the ACL filter as Consul does (``filterHealthChecks``: node:read and, for a
    service check, service:read; ``filterServices``: service:read; ``filterNodes``:
    node:read).

Response shape (``agent/structs/structs.go``)
    ``NodeService.Port`` is ``json:",omitempty"``: a service registered without a port has no
    ``Port`` key. Tags and Checks are ``[]`` rather than null (``healthServiceNodes``).

Headers (``agent/http.go``)
    ``wrap`` sets ``X-Consul-Default-ACL-Policy`` on every response (``setACLDefaultPolicy``;
    Consul's default config is ``acl_default_policy = "allow"``, so it is sent with ACLs off too).
    ``setMeta`` sets ``X-Consul-Index`` (never 0, ``setIndex``), ``X-Consul-LastContact``,
    ``X-Consul-KnownLeader``, ``X-Consul-Effective-Consistency`` and, only when true,
    ``X-Consul-Results-Filtered-By-ACLs`` -- only on success: an error answer carries no meta.

Tokens and ACLs
    ``parseTokenInternal`` / ``parseTokenFromHeaders``: ``?token`` first, then ``X-Consul-Token``,
    then ``Authorization: Bearer``; none -> the agent's default (user) token, else anonymous.
    ``agent/consul/acl.go`` ``ResolveToken``: an unknown secret is 403 ``ACL not found``.
    Policies are the HCL rules Consul uses (``service``/``service_prefix``/``node``/
    ``node_prefix``/``agent``/``agent_prefix`` blocks with ``policy = "read"|"write"|"deny"``);
    an exact rule beats prefixes and the longest prefix wins, else the default policy
    (``acl/policy_authorizer.go``). Reads are filtered, never refused:
    ``aclFilter.filterCheckServiceNodes`` drops an entry unless the token may read its node
    *and* its service (``allowNode`` && ``allowService``) and the answer stays 200. The
    filtered flag is hidden when the request's token is empty (``agent/consul/rpc.go``
    ``maskResultsFilteredByACLs``: the empty token means no agent default token either).

Failures
    * ``stop()``: connections refused, open and blocked ones dropped (agent down).
    * ``lose_leader(hold_s)``: agent up, servers without a leader. A query (blocked ones
      included) is held up to ``hold_s`` (``rpc_hold_timeout``, 7 s in Consul) while the agent
      retries (``agent/consul/client.go`` ``RPC`` / ``rpc.go`` ``canRetry``: no-leader errors are
      always retried); if a leader returns meanwhile it is answered, else 500 ``No cluster
      leader`` (``agent/structs/errors.go``). ``?stale`` reads are served by a follower: 200 with
      ``X-Consul-KnownLeader: false`` (``rpc.go`` ``canServeReadRequest`` / ``SetQueryMeta``).
    * ``lose_servers()``: the agent knows no server: 500 ``No known Consul servers`` at once,
      stale or not (``client.go`` ``RPC`` returns ``ErrNoServers`` before retrying).
    * ``max_conns_per_client`` (Consul's ``http_max_conns_per_client``, default 200): one
      connection too many from an IP gets ``hashicorp/go-connlimit``'s raw ``HTTP/1.1 429 Too
      Many Requests`` and is closed before any request is read
      (``HTTPConnStateFuncWithDefault429Handler``).
    * ``?dc`` other than the agent's: 500 ``No path to datacenter`` (``rpc.go`` ``forwardDC``).

Indexes (``agent/consul/state/catalog.go``)
    Every write takes the next raft index. A check change bumps its service's index; a node
    check change bumps every service on that node (``updateAllServiceIndexesOfNode``). A
    service that does not exist answers the last extinction index (set when the last instance
    of any service is deregistered) or, if none ever was, the catalog's max index
    (``maxIndexAndWatchChForService``); registering it wakes a query blocked on it. The
    checks, services and nodes tables each have an index entry and a content version:
    a write to a table moves both (check writes: checks; instance writes: services, plus
    the nodes and checks index entries without a write, as ``catalogInsertService`` and
    ``deleteServiceTxn`` do; ``set_node_address``: nodes, and every service on the node),
    and only a content change wakes a blocked datacenter-wide read (its memdb watch set).
    ``reset_index`` also answers every blocked read at once (the state store's
    ``AbandonCh`` after a snapshot restore). A blocked query whose client hung up ends
    within 0.1 s (Go's net/http cancels the request's context), so ``open_connections()``
    counts what the client holds.

Test controls: ``stop()``, ``restart()`` (same port, state kept), ``lose_leader()`` /
``lose_servers()`` / ``regain_leader()``, ``set_token()`` / ``delete_token()`` /
``set_anonymous_policy()`` (policy edits and token swaps at run time), ``node_check()``,
``node_maintenance()``, ``set_node_address()``, ``reset_index()`` (index goes backwards), ``inject_raw()`` (a
malformed entry), ``stall()`` (accept but never answer), ``requests`` (every request served,
with its token) and ``open_connections()``.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from caravan.local.process import free_port

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
DEFAULT_WAIT_S, MAX_WAIT_S = 300.0, 600.0
STATUSES = ("passing", "warning", "critical")
MANAGEMENT = "management"  # a token with the builtin global-management policy
NO_LEADER = "No cluster leader"
NO_SERVERS = "No known Consul servers"
NO_DC_PATH = "No path to datacenter"
_TOO_MANY_MSG = "Your IP is issuing too many concurrent connections, please rate limit your calls\n"
TOO_MANY_CONNS = (
    "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\n"
    f"Content-Length: {len(_TOO_MANY_MSG)}\r\nConnection: close\r\n\r\n{_TOO_MANY_MSG}"
).encode()
NODE_MAINT_ID = "_node_maintenance"
TABLES = ("checks", "services", "nodes")
HANGUP_POLL_S = 0.1
CHECK_STATES = ("any", "passing", "warning", "critical")
_BEXPR_TERM = re.compile(r'^ServiceName == "((?:[^"\\]|\\.)*)"$')
_RULE = re.compile(r'(service|service_prefix|node|node_prefix|agent|agent_prefix)\s+"([^"]*)"'
                   r'\s*\{\s*policy\s*=\s*"(read|write|deny|list)"\s*\}')
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


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


# ------------------------------------------------------------------------------------ ACLs


@dataclass(frozen=True)
class Authorizer:
    """One token's effective rules (``acl/policy_authorizer.go``): per resource, exact names
    and prefixes -> policy; an exact rule wins, then the longest prefix, then ``default``."""

    default: str  # "allow" | "deny"
    exact: dict[str, dict[str, str]] = field(default_factory=dict)
    prefix: dict[str, dict[str, str]] = field(default_factory=dict)
    management: bool = False

    @classmethod
    def parse(cls, rules: str, default: str) -> Authorizer:
        """HCL rules (the subset Caravan's policies use) -> an authorizer. ValueError on any
        text that is not a rule, so a typo in a documented policy fails the test using it."""
        if rules == MANAGEMENT:
            return cls(default, management=True)
        leftover = _RULE.sub("", rules).strip()
        if leftover:
            raise ValueError(f"not a Consul ACL rule: {leftover[:60]!r}")
        exact: dict[str, dict[str, str]] = {}
        prefix: dict[str, dict[str, str]] = {}
        for kind, name, policy in _RULE.findall(rules):
            table = prefix if kind.endswith("_prefix") else exact
            table.setdefault(kind.removesuffix("_prefix"), {})[name] = policy
        return cls(default, exact, prefix)

    def policy(self, resource: str, name: str) -> str:
        if self.management:
            return "write"
        exact = self.exact.get(resource, {})
        if name in exact:
            return exact[name]
        matches = [p for p in self.prefix.get(resource, {}) if name.startswith(p)]
        if matches:
            return self.prefix[resource][max(matches, key=len)]
        return "write" if self.default == "allow" else "deny"

    def allows(self, resource: str, name: str, access: str = "read") -> bool:
        policy = self.policy(resource, name)
        return policy == "write" or (access == "read" and policy in ("read", "list"))


# ----------------------------------------------------------------------------- the fake


@dataclass
class _Leader:
    """Cluster state as the agent sees it: ``ok``, ``no_leader`` or ``no_servers``."""

    state: str = "ok"
    hold_s: float = 0.0
    lost_at: float = 0.0


class ConsulFake:
    """One fake agent + catalog. Thread-safe; helpers work whether running or not.

    ACLs are off unless ``acl_default_policy`` is "allow"/"deny" or ``token`` is given (the
    latter: default deny, ``token`` a management token). ``agent_token`` is the agent's
    default token, used for requests that carry none.
    """

    def __init__(self, token: str | None = None, node: str = "node-1",
                 node_address: str = "127.0.0.1", datacenter: str = "dc1", seed: int = 0, *,
                 acl_default_policy: str | None = None, agent_token: str | None = None,
                 max_conns_per_client: int = 200) -> None:
        self.token = token
        self.datacenter = datacenter
        self.default_node = node
        self.agent_token = agent_token
        self.max_conns_per_client = max_conns_per_client
        self.acl_default_policy = acl_default_policy or ("deny" if token else None)
        self.requests: list[Request] = []
        self._cond = threading.Condition()
        self._rng = random.Random(seed)
        self._index = 10
        self._nodes: dict[str, dict[str, Any]] = {}
        self._services: dict[tuple[str, str], dict[str, Any]] = {}  # (node, id) -> service
        self._checks: dict[tuple[str, str], dict[str, Any]] = {}  # (node, check id) -> check
        self._svc_index: dict[str, int] = {}  # service name -> modify index
        self._extinction = 0  # raft index of the last service extinction (0: never)
        # per table: the index entry (``indexUpdateMaxTxn``) and a content version (bumped
        # when the table itself is written: what a blocked query's memdb watch fires on)
        self._table_index = dict.fromkeys(TABLES, 10)
        self._table_version = dict.fromkeys(TABLES, 0)
        self._abandon = 0  # bumped by reset_index (a snapshot restore's AbandonCh)
        self._local = threading.local()  # the serving thread's "client hung up?" probe
        self._raw: dict[str, list[Any]] = {}
        self._tokens: dict[str, Authorizer] = {}
        self._anonymous = ""
        self._leader = _Leader()
        self._generation = 0  # bumped by stop(): blocked requests of old generations are dropped
        self._stalled = False
        self._server: _Server | None = None
        self.port = 0
        self.add_node(node, node_address)
        if token is not None:
            self.set_token(token, MANAGEMENT)

    # ---- lifecycle -------------------------------------------------------------
    def start(self) -> str:
        """Listen (on a free port the first time, the same port after) -> base URL."""
        if self._server is not None:
            return self.base_url
        self.port = self.port or free_port()
        server = _Server(("127.0.0.1", self.port), _Handler, self)
        threading.Thread(target=server.serve_forever, args=(0.05,), name="consul-fake",
                         daemon=True).start()
        self._server = server
        return self.base_url

    def stop(self) -> None:
        """Stop listening (connections refused), close open connections, drop blocked queries."""
        server, self._server = self._server, None
        with self._cond:
            self._generation += 1
            self._cond.notify_all()
        if server is not None:
            server.shutdown()
            server.server_close()
            server.drop_connections()

    def restart(self) -> str:
        self.stop()
        return self.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def open_connections(self) -> int:
        """Client connections open right now (all from 127.0.0.1)."""
        return self._server.open_count() if self._server is not None else 0

    def __enter__(self) -> ConsulFake:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- cluster failures ------------------------------------------------------
    def lose_leader(self, hold_s: float = 0.0) -> None:
        """Servers lose their leader; queries are held ``hold_s`` then answered 500."""
        with self._cond:
            self._leader = _Leader("no_leader", hold_s, time.monotonic())
            self._cond.notify_all()

    def lose_servers(self) -> None:
        """The agent knows no server: every query is answered 500 at once."""
        with self._cond:
            self._leader = _Leader("no_servers", 0.0, time.monotonic())
            self._cond.notify_all()

    def regain_leader(self) -> None:
        """A leader is elected again (index continues from where it was)."""
        with self._cond:
            self._leader = _Leader()
            self._cond.notify_all()

    # ---- ACL administration ----------------------------------------------------
    def set_token(self, secret: str, rules: str) -> None:
        """Create or replace token ``secret`` with HCL ``rules`` (or ``MANAGEMENT``): a policy
        edit or token swap. As in Consul, it wakes no blocked query (ACL changes are not in
        a query's watch set); the next evaluation of a query -- a new one, or a blocked one
        woken by a catalog change or its wait -- uses it (``filterACL`` resolves the token
        on every run of the blocking query's function)."""
        if self.acl_default_policy is None:
            self.acl_default_policy = "deny"
        with self._cond:
            self._tokens[secret] = Authorizer.parse(rules, self.acl_default_policy)

    def delete_token(self, secret: str) -> None:
        with self._cond:
            self._tokens.pop(secret, None)

    def set_anonymous_policy(self, rules: str) -> None:
        """Rules of the anonymous token (used by requests with no token and no agent token)."""
        Authorizer.parse(rules, "deny")  # validate
        with self._cond:
            self._anonymous = rules

    def _authorizer(self, token: str) -> Authorizer:
        """``ResolveToken``: "" is anonymous; an unknown secret raises 403 ``ACL not found``."""
        default = self.acl_default_policy
        if default is None:
            return Authorizer("allow")
        if token == "":
            return Authorizer.parse(self._anonymous, default)
        found = self._tokens.get(token)
        if found is None:
            raise _HttpError(403, "ACL not found")
        return found

    # ---- state changes (also reached through the HTTP API) ---------------------
    def add_node(self, node: str, address: str = "127.0.0.1") -> None:
        """A node with its ``serfHealth`` check (passing)."""
        with self._cond:
            if node in self._nodes:
                return
            idx = self._next_index()
            self._write(idx, "nodes", "checks")
            self._nodes[node] = {"ID": "", "Node": node, "Address": address,
                                 "Datacenter": self.datacenter, "TaggedAddresses": {},
                                 "Meta": {}, "CreateIndex": idx, "ModifyIndex": idx}
            self._checks[(node, "serfHealth")] = self._check_doc(
                node, "serfHealth", "Serf Health Status", "passing", None, idx,
                output="Agent alive and reachable")

    def set_node_address(self, node: str, address: str) -> None:
        """Re-register ``node`` with a new address (``ensureNodeTxn``): a nodes-table write;
        every service on the node gets a new index (``catalogInsertNode`` ->
        ``updateAllServiceIndexesOfNode``); neither the services nor the checks table moves."""
        with self._cond:
            idx = self._next_index()
            self._nodes[node].update(Address=address, ModifyIndex=idx)
            self._write(idx, "nodes")
            for (n, _), svc in self._services.items():
                if n == node:
                    self._svc_index[svc["Service"]] = idx

    def register(self, name: str, service_id: str | None = None, *, port: int = 8001,
                 address: str = "", tags: list[str] | None = None,
                 meta: dict[str, str] | None = None,
                 weights: dict[str, int] | None = None, check_status: str | None = "passing",
                 node: str | None = None, node_address: str = "127.0.0.1") -> str:
        """Register a service instance on ``node``; ``check_status`` None registers no check."""
        body: dict[str, Any] = {"Name": name, "ID": service_id or name, "Port": port,
                                "Address": address, "Tags": tags or [], "Meta": meta or {}}
        if weights is not None:
            body["Weights"] = weights
        if check_status is not None:
            body["Check"] = {"TTL": "30s", "Status": check_status}
        node = node or self.default_node
        self.add_node(node, node_address)
        return self._register(body, node)

    def _register(self, raw_body: dict[str, Any], node: str) -> str:
        body = _fold(raw_body)  # Consul decodes JSON field names case-insensitively
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise _HttpError(400, "Missing service name")
        sid = str(body.get("id") or name)
        weights = _weights(body.get("weights"))
        listed = body.get("checks") or ([body["check"]] if body.get("check") else [])
        with self._cond:
            had_checks = self._drop_service(node, sid)
            idx = self._bump(name)
            self._write(idx, "services", *(["checks"] if listed or had_checks else []))
            self._table_index["nodes"] = idx  # catalogInsertService: index only, no wake
            svc: dict[str, Any] = {
                "ID": sid, "Service": name, "Tags": list(body.get("tags") or []),
                "Address": body.get("address", ""), "Meta": dict(body.get("meta") or {}),
                "Port": int(body.get("port") or 0), "Weights": weights,
                "EnableTagOverride": False, "CreateIndex": idx, "ModifyIndex": idx,
            }
            self._services[(node, sid)] = svc
            for n, chk in enumerate(_fold(c) for c in listed):
                default = f"service:{sid}" if len(listed) == 1 else f"service:{sid}:{n + 1}"
                cid = chk.get("checkid") or default
                self._checks[(node, cid)] = self._check_doc(
                    node, cid, chk.get("name") or f"Service '{name}' check",
                    chk.get("status", "critical"), svc, idx)
        return sid

    def deregister(self, service_id: str, node: str | None = None) -> None:
        node = node or self.default_node
        with self._cond:
            svc = self._services.get((node, service_id))
            if svc is None:
                raise _HttpError(404, f'Unknown service ID "{service_id}". Ensure that the '
                                      "service ID is passed, not the service name.")
            name = svc["Service"]
            had_checks = self._drop_service(node, service_id)
            idx = self._bump(name)
            self._write(idx, "services", *(["checks"] if had_checks else []))
            self._table_index["nodes"] = idx  # deleteServiceTxn: index only, no wake
            self._table_index["checks"] = idx  # catalogUpdateCheckIndexes, always
            if not any(s["Service"] == name for s in self._services.values()):
                self._svc_index.pop(name, None)  # the service is extinct
                self._extinction = idx

    def set_check(self, service_id: str, status: str, output: str = "",
                  node: str | None = None) -> None:
        """Set every (non-maintenance) check of ``service_id`` on ``node`` to ``status``."""
        node = node or self.default_node
        with self._cond:
            ids = [cid for (n, cid), v in self._checks.items()
                   if n == node and v["ServiceID"] == service_id
                   and not cid.startswith("_service_maintenance:")]
        if not ids:
            raise KeyError(f"service {service_id!r} has no checks")
        for cid in ids:
            self.update_check(cid, status, output, node)

    def update_check(self, check_id: str, status: str, output: str = "",
                     node: str | None = None) -> None:
        if status not in STATUSES:
            raise _HttpError(400, f'Invalid check status: "{status}"')
        node = node or self.default_node
        with self._cond:
            check = self._checks.get((node, check_id))
            if check is None:
                raise _HttpError(404, f'Unknown check ID "{check_id}"')
            idx = self._bump_for_check(check)
            self._write(idx, "checks")
            check.update(Status=status, Output=output, ModifyIndex=idx)

    def node_check(self, node: str, status: str, check_id: str = "serfHealth") -> None:
        """Set (or add) a node-level check; every service on ``node`` gets a new index."""
        if status not in STATUSES:
            raise ValueError(status)
        self.add_node(node)
        with self._cond:
            check = self._checks.get((node, check_id))
            if check is None:
                check = self._checks[(node, check_id)] = self._check_doc(
                    node, check_id, check_id, status, None, self._index)
            idx = self._bump_for_check(check)
            self._write(idx, "checks")
            check.update(Status=status, ModifyIndex=idx)

    def node_maintenance(self, on: bool, reason: str = "", node: str | None = None) -> None:
        """``PUT /v1/agent/maintenance``: a critical ``_node_maintenance`` check on the node."""
        node = node or self.default_node
        with self._cond:
            key = (node, NODE_MAINT_ID)
            if on:
                notes = reason or ("Maintenance mode is enabled for this node, but no reason "
                                   "was provided. This is a default message.")
                self._checks[key] = self._check_doc(node, NODE_MAINT_ID, "Node Maintenance Mode",
                                                    "critical", None, self._index, notes=notes)
                idx = self._bump_for_check(self._checks[key])
                self._checks[key].update(CreateIndex=idx, ModifyIndex=idx)
                self._write(idx, "checks")
            elif key in self._checks:
                idx = self._bump_for_check(self._checks.pop(key))
                self._write(idx, "checks")
                self._table_index["services"] = idx  # deleteCheckTxn of a node check

    def maintenance(self, service_id: str, on: bool, reason: str = "",
                    node: str | None = None) -> None:
        node = node or self.default_node
        with self._cond:
            svc = self._services.get((node, service_id))
            if svc is None:
                raise _HttpError(404, f'Unknown service ID "{service_id}"')
            key = (node, f"_service_maintenance:{service_id}")
            if on:
                notes = reason or ("Maintenance mode is enabled for this service, but no reason "
                                   "was provided. This is a default message.")
                idx = self._bump(svc["Service"])
                self._checks[key] = self._check_doc(node, key[1], "Service Maintenance Mode",
                                                    "critical", svc, idx, notes=notes)
                self._write(idx, "checks")
            elif self._checks.pop(key, None) is not None:
                self._write(self._bump(svc["Service"]), "checks")

    def inject_raw(self, service: str, entry: Any) -> None:
        """Add ``entry`` verbatim to ``service``'s health response (malformed-data tests)."""
        with self._cond:
            self._raw.setdefault(service, []).append(entry)
            self._write(self._bump(service), "services")  # as an instance written

    def reset_index(self, to: int = 1) -> None:
        """Make every index go backwards (as after a raft snapshot restore)."""
        with self._cond:
            self._index = to
            self._svc_index = dict.fromkeys(self._svc_index, to)
            self._extinction = min(self._extinction, to)
            self._table_index = dict.fromkeys(TABLES, to)
            self._abandon += 1  # blocked queries answer at once, with the lower index
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

    def service_index(self, service: str) -> int:
        """The index a health query for ``service`` answers now."""
        with self._cond:
            return self._index_for(service)

    # ---- internals (caller holds self._cond) -----------------------------------
    def _next_index(self) -> int:
        self._index += 1
        self._cond.notify_all()
        return self._index

    def _bump(self, service: str) -> int:
        idx = self._next_index()
        self._svc_index[service] = idx
        return idx

    def _bump_for_check(self, check: dict[str, Any]) -> int:
        """A service check bumps its service; a node check every service on the node."""
        if check["ServiceName"]:
            return self._bump(check["ServiceName"])
        idx = self._next_index()
        for (node, _), svc in self._services.items():
            if node == check["Node"]:
                self._svc_index[svc["Service"]] = idx
        return idx

    def _index_for(self, service: str) -> int:
        """``maxIndexAndWatchChForService``: the service's index; for a missing service the
        last extinction index, else the catalog's max index."""
        if service in self._svc_index:
            return self._svc_index[service]
        return self._extinction or self._index

    def _check_doc(self, node: str, cid: str, name: str, status: str,
                   svc: dict[str, Any] | None, idx: int, notes: str = "",
                   output: str = "") -> dict[str, Any]:
        ttl = cid.startswith("service:")
        return {"Node": node, "CheckID": cid, "Name": name, "Status": status, "Notes": notes,
                "Output": output, "ServiceID": svc["ID"] if svc else "",
                "ServiceName": svc["Service"] if svc else "",
                "ServiceTags": list(svc["Tags"]) if svc else [], "Type": "ttl" if ttl else "",
                "Interfaces": None, "ExposedPort": 0, "Definition": {},
                "CreateIndex": idx, "ModifyIndex": idx}

    def _drop_service(self, node: str, sid: str) -> bool:
        """Remove an instance and its checks; True when it had checks."""
        self._services.pop((node, sid), None)
        keys = [k for k, v in self._checks.items() if k[0] == node and v["ServiceID"] == sid]
        for key in keys:
            del self._checks[key]
        return bool(keys)

    def _write(self, idx: int, *tables: str) -> None:
        """Tables written at raft index ``idx``: their index entries and contents change."""
        for table in tables:
            self._table_index[table] = idx
            self._table_version[table] += 1

    def _entries(self, service: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for (node, sid), svc in sorted(self._services.items()):
            if svc["Service"] != service:
                continue
            checks = [dict(c) for (n, _), c in sorted(self._checks.items())
                      if n == node and c["ServiceID"] in ("", sid)]
            out.append({"Node": dict(self._nodes[node]), "Service": _service_json(svc),
                        "Checks": checks})
        return out

    # ---- the health endpoint -----------------------------------------------------
    def _health(self, service: str, q: _Query, token: str, generation: int) -> _Answer | None:
        """``healthServiceNodes`` + ``Health.ServiceNodes``; None = drop the connection."""
        deadline = time.monotonic() + q.wait_s + self._rng.uniform(0, q.wait_s / 16)
        with self._cond:
            while True:
                if generation != self._generation or self._hung_up():
                    return None
                self._route_rpc(q, generation)  # raises 500s; holds while leaderless
                auth = self._authorizer(token)
                index = self._index_for(service)
                blocked = self._stalled or (q.min_index > 0 and index <= q.min_index)
                remaining = deadline - time.monotonic()
                if not blocked or (remaining <= 0 and not self._stalled):
                    return self._answer(service, auth, token, q, index)
                self._cond.wait(min(remaining, HANGUP_POLL_S) if remaining > 0 else 0.05)

    # ---- datacenter-wide reads: /v1/health/state/:state, /v1/catalog/{services,nodes} --------
    def _blocking_read(self, table: str, q: _Query, token: str, generation: int,
                       render: Callable[[Authorizer], tuple[Any, bool]]) -> _Answer | None:
        """``blockingquery.Query`` over one table: answer at once when the table's index is
        above ``?index``; else wait until the table is written (its memdb watch fires) with
        the index past ``?index``, a snapshot restore (``AbandonCh``) or the wait's end, and
        answer with the index then. An index bump without a write (``catalogInsertService``
        on the nodes entry) wakes nothing. ``render`` -> (body, filtered by ACLs)."""
        deadline = time.monotonic() + q.wait_s + self._rng.uniform(0, q.wait_s / 16)
        with self._cond:
            abandon, seen = self._abandon, None
            while True:
                if generation != self._generation or self._hung_up():
                    return None
                self._route_rpc(q, generation)
                auth = self._authorizer(token)
                index, version = self._table_index[table], self._table_version[table]
                remaining = deadline - time.monotonic()
                if (q.min_index == 0 or self._abandon != abandon or remaining <= 0
                        or (version != seen and index > q.min_index)):
                    body, filtered = render(auth)
                    return _Answer(200, body, self._meta(index, q, filtered and token != ""))
                seen = version
                self._cond.wait(min(remaining, HANGUP_POLL_S))

    def _checks_in_state(self, state: str, q: _Query, flt: frozenset[str] | None, token: str,
                         generation: int) -> _Answer | None:
        """``Health.ChecksInState``: ``state`` any or one status (``checksInStateTxn``), the
        ``?filter`` first, then ``aclFilter.filterHealthChecks`` (node:read on the check's
        node and, for a service check, service:read on its service)."""
        if state not in CHECK_STATES:
            raise _HttpError(400, f"Bad check state: {state}")

        def render(auth: Authorizer) -> tuple[Any, bool]:
            checks = [dict(c) for _, c in sorted(self._checks.items())
                      if state == "any" or c["Status"] == state]
            checks = [c for c in checks if flt is None or c["ServiceName"] in flt]
            kept = [c for c in checks if auth.allows("node", c["Node"])
                    and (not c["ServiceName"] or auth.allows("service", c["ServiceName"]))]
            return kept, len(kept) < len(checks)
        return self._blocking_read("checks", q, token, generation, render)

    def _catalog_services(self, q: _Query, flt: frozenset[str] | None, token: str,
                          generation: int) -> _Answer | None:
        """``Catalog.ListServices``: name -> tags of every instance (``servicesTagsByName``),
        ``?filter`` over the instances first, then ``filterServices`` (service:read)."""
        def render(auth: Authorizer) -> tuple[Any, bool]:
            tags: dict[str, set[str]] = {}
            for svc in self._services.values():
                if flt is None or svc["Service"] in flt:
                    tags.setdefault(svc["Service"], set()).update(svc["Tags"])
            kept = {n: sorted(t) for n, t in sorted(tags.items()) if auth.allows("service", n)}
            return kept, len(kept) < len(tags)
        return self._blocking_read("services", q, token, generation, render)

    def _catalog_nodes(self, q: _Query, token: str, generation: int) -> _Answer | None:
        """``Catalog.ListNodes``: every node, then ``filterNodes`` (node:read)."""
        def render(auth: Authorizer) -> tuple[Any, bool]:
            nodes = [dict(n) for _, n in sorted(self._nodes.items())]
            kept = [n for n in nodes if auth.allows("node", n["Node"])]
            return kept, len(kept) < len(nodes)
        return self._blocking_read("nodes", q, token, generation, render)

    def _hung_up(self) -> bool:
        """Whether the client of the request this thread serves closed its connection. Go's
        net/http notices it (a background read on the connection cancels the request's
        context) and the blocked query ends; so does the fake, within ``HANGUP_POLL_S``, so
        ``open_connections()`` counts what the client really holds."""
        probe = getattr(self._local, "gone", None)
        return bool(probe is not None and probe())

    def _meta(self, index: int, q: _Query, filtered: bool) -> dict[str, str]:
        """``setMeta``: index (never 0), last contact, known leader, consistency, and the
        filtered flag only when true."""
        leaderless = self._leader.state != "ok"
        headers = {"X-Consul-Index": str(max(index, 1)),
                   "X-Consul-LastContact": str(self._last_contact_ms()),
                   "X-Consul-KnownLeader": "false" if leaderless else "true",
                   "X-Consul-Effective-Consistency": "stale" if q.stale else "leader"}
        if filtered:
            headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
        return headers

    def _route_rpc(self, q: _Query, generation: int) -> None:
        """The agent's RPC path: no servers, wrong DC, no leader (held, then 500)."""
        if self._leader.state == "no_servers":
            raise _HttpError(500, NO_SERVERS)
        if q.dc not in ("", self.datacenter):
            raise _HttpError(500, NO_DC_PATH)
        if self._leader.state == "ok" or q.stale:
            return
        hold_until = time.monotonic() + self._leader.hold_s
        while self._leader.state == "no_leader" and generation == self._generation:
            remaining = hold_until - time.monotonic()
            if remaining <= 0:
                raise _HttpError(500, NO_LEADER)
            self._cond.wait(remaining)
        if self._leader.state == "no_servers":
            raise _HttpError(500, NO_SERVERS)

    def _answer(self, service: str, auth: Authorizer, token: str, q: _Query,
                index: int) -> _Answer:
        entries = self._entries(service)
        kept = [e for e in entries if auth.allows("node", e["Node"]["Node"])
                and auth.allows("service", e["Service"]["Service"])]
        headers = self._meta(index, q, len(kept) < len(entries) and token != "")
        if q.passing:
            kept = [e for e in kept if all(c["Status"] == "passing" for c in e["Checks"])]
        return _Answer(200, kept + list(self._raw.get(service, [])), headers)

    def _agent_self(self, token: str) -> dict[str, Any]:
        """``GET /v1/agent/self`` (``agent_endpoint.go`` ``AgentSelf``): needs ``agent:read``
        on the agent's node, else 403 ``Permission denied``. Local: works without a leader."""
        with self._cond:
            auth = self._authorizer(token)
        if not auth.allows("agent", self.default_node):
            raise _HttpError(403, "Permission denied: accessor  lacks permission 'agent:read' "
                                  f"on agent {self.default_node}")
        return {"Config": {"Datacenter": self.datacenter, "NodeName": self.default_node},
                "Member": {"Name": self.default_node}}

    def _last_contact_ms(self) -> int:
        if self._leader.state == "ok":
            return 0
        return int((time.monotonic() - self._leader.lost_at) * 1000)


def canonical_header(key: str) -> str:
    """Go's ``textproto.CanonicalMIMEHeaderKey``, which ``Header.Set`` applies: Consul sends
    ``X-Consul-Knownleader``, ``X-Consul-Default-Acl-Policy`` (HTTP names are case-blind)."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in key.split("-"))


def _service_json(svc: dict[str, Any]) -> dict[str, Any]:
    """``NodeService`` as Consul encodes it: ``Port`` omitted when 0 (``omitempty``)."""
    out = {k: v for k, v in svc.items() if not (k == "Port" and v == 0)}
    out.update(Proxy={"Mode": "", "MeshGateway": {}, "Expose": {}}, Connect={})
    return out


def _weights(raw: Any) -> dict[str, int]:
    """``ValidateWeights``: Passing >= 1, Warning >= 0, both <= 65535; absent -> 1/1."""
    if raw is None:
        return {"Passing": 1, "Warning": 1}
    w = _fold(raw)
    passing, warning = int(w.get("passing", 0)), int(w.get("warning", 0))
    if passing < 1:
        raise _HttpError(400, "Invalid Weights: Passing must be greater than 0")
    if warning < 0:
        raise _HttpError(400, "Invalid Weights: Warning must be greater or equal than 0")
    if passing > 65535 or warning > 65535:
        raise _HttpError(400, "Invalid Weights: DNS Weight must be between 0 and 65535")
    return {"Passing": passing, "Warning": warning}


def _fold(obj: dict[str, Any]) -> dict[str, Any]:
    """Top-level keys lower-cased, ``_`` dropped (``CheckID``, ``checkid``, ``check_id``)."""
    return {k.lower().replace("_", ""): v for k, v in obj.items()}


@dataclass(frozen=True)
class _Query:
    """The parsed query options of one read (``agent/http.go`` ``parse``)."""

    min_index: int
    wait_s: float
    dc: str
    stale: bool
    passing: bool


@dataclass(frozen=True)
class _Answer:
    code: int
    body: Any
    headers: dict[str, str]


def _parse_query(query: dict[str, list[str]]) -> _Query:
    """``parseWait`` (400 ``Invalid wait time`` / ``Invalid index``), ``parseDC``,
    ``parseConsistency``; ``?passing`` validated after the RPC as Consul does."""
    raw_index = query.get("index", [""])[0]
    if raw_index and not raw_index.isdigit():
        raise _HttpError(400, "Invalid index")
    raw_wait = query.get("wait", [""])[0]
    try:
        wait_s = parse_duration(raw_wait) if raw_wait else DEFAULT_WAIT_S
    except ValueError:
        raise _HttpError(400, "Invalid wait time") from None
    return _Query(int(raw_index or 0), min(wait_s, MAX_WAIT_S), query.get("dc", [""])[0],
                  "stale" in query, _flag(query, "passing"))


def parse_filter(text: str) -> frozenset[str] | None:
    """The subset of go-bexpr discovery sends: ``ServiceName == "a" or ServiceName == "b"``
    -> the names (None: no filter). Anything else is 400, as a filter bexpr cannot parse
    (``bexpr.CreateFilter`` errors are returned before the query runs)."""
    if not text:
        return None
    names = []
    for term in text.split(" or "):
        m = _BEXPR_TERM.match(term.strip())
        if m is None:
            raise _HttpError(400, f"Failed to create boolean expression evaluator: {term!r}")
        names.append(re.sub(r"\\(.)", r"\1", m.group(1)))
    return frozenset(names)


def _flag(query: dict[str, list[str]], name: str) -> bool:
    """``getBoolQueryParam``: bare flag is true, else ``strconv.ParseBool``."""
    if name not in query:
        return False
    value = query[name][0]
    if value == "" or value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _HttpError(400, f"Invalid value for ?{name}")


# ----------------------------------------------------------------------------- HTTP server


class _Server(ThreadingHTTPServer):
    """HTTP/1.1 server with go-connlimit's per-client-IP connection limit."""

    daemon_threads = True

    def __init__(self, addr: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 fake: ConsulFake) -> None:
        self.fake = fake
        self._conns: dict[str, set[socket.socket]] = {}
        self._conns_lock = threading.Lock()
        super().__init__(addr, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        ip = client_address[0]
        with self._conns_lock:
            open_now = self._conns.setdefault(ip, set())
            refused = 0 < self.fake.max_conns_per_client <= len(open_now)
            if not refused:
                open_now.add(request)
        if refused:  # HTTPConnStateFuncWithDefault429Handler: raw 429, then close
            try:
                request.settimeout(0.01)
                request.sendall(TOO_MANY_CONNS)
            except OSError:
                pass
            super().shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            for conns in self._conns.values():
                conns.discard(request)
        super().shutdown_request(request)

    def open_count(self) -> int:
        with self._conns_lock:
            return sum(len(c) for c in self._conns.values())

    def drop_connections(self) -> None:
        """Close every open client connection (the agent went away)."""
        with self._conns_lock:
            conns = [c for group in self._conns.values() for c in group]
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (a timed-out blocking query) is normal, as for Consul."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, OSError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server_version = "consul-fake"
    protocol_version = "HTTP/1.1"  # keep-alive, as Go's net/http
    disable_nagle_algorithm = True  # TCP_NODELAY, Go's default for every TCP connection

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
        sent = self._token(query)
        fake._local.gone = self._client_gone
        with fake._cond:
            fake.requests.append(Request(method, url.path, query, sent, time.monotonic()))
        body = self._body()
        try:
            self._route(method, url.path, query, sent, body, generation)
        except _HttpError as err:
            self._reply(err.code, err.body.encode(), "text/plain; charset=utf-8")

    def _client_gone(self) -> bool:
        """The client closed (or shut down) its end: readable with nothing to read."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _token(self, query: dict[str, list[str]]) -> str | None:
        """``parseTokenInternal``: ``?token``, then ``X-Consul-Token``, then Bearer."""
        if query.get("token", [""])[0]:
            return query["token"][0]
        if self.headers.get("X-Consul-Token"):
            return str(self.headers["X-Consul-Token"])
        parts = (self.headers.get("Authorization") or "").split(" ")
        if len(parts) > 1 and parts[0].lower() == "bearer":
            return " ".join(parts[1:]).strip().split(" ")[0]
        return None

    def _route(self, method: str, path: str, query: dict[str, list[str]], sent: str | None,
               body: bytes, generation: int) -> None:
        fake = self.fake
        token = sent or fake.agent_token or ""  # parseTokenWithDefault
        if path.startswith("/v1/health/service/") and method == "GET":
            q = _parse_query(query)
            answer = fake._health(path.removeprefix("/v1/health/service/"), q, token, generation)
            if answer is None:
                self.close_connection = True  # dropped: the client sees the connection close
                return
            self._reply(answer.code, json.dumps(answer.body).encode(), "application/json",
                        answer.headers)
            return
        if method == "GET" and (path.startswith("/v1/health/state/")
                                or path in ("/v1/catalog/services", "/v1/catalog/nodes")):
            self._send(self._catalog_read(path, query, token, generation))
            return
        if path == "/v1/agent/self" and method == "GET":
            self._reply(200, json.dumps(fake._agent_self(token)).encode(), "application/json")
            return
        if method != "PUT" or not path.startswith("/v1/agent/"):
            raise _HttpError(405 if path.startswith("/v1/") else 404,
                             "method or path not supported")
        with fake._cond:
            auth = fake._authorizer(token)
        _AgentWrite(fake, auth).dispatch(path.removeprefix("/v1/agent/"), query, body)
        self._reply(200, b"", "text/plain")

    def _catalog_read(self, path: str, query: dict[str, list[str]], token: str,
                      generation: int) -> _Answer | None:
        fake, q = self.fake, _parse_query(query)
        flt = parse_filter(query.get("filter", [""])[0])
        if path.startswith("/v1/health/state/"):
            return fake._checks_in_state(path.removeprefix("/v1/health/state/"), q, flt, token,
                                         generation)
        if path == "/v1/catalog/services":
            return fake._catalog_services(q, flt, token, generation)
        if flt is not None:
            raise _HttpError(400, "the fake supports ?filter on ServiceName only")
        return fake._catalog_nodes(q, token, generation)

    def _send(self, answer: _Answer | None) -> None:
        if answer is None:
            self.close_connection = True  # dropped: the client sees the connection close
            return
        self._reply(answer.code, json.dumps(answer.body).encode(), "application/json",
                    answer.headers)

    def _reply(self, code: int, body: bytes, ctype: str,
               headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        all_headers = {"X-Consul-Default-ACL-Policy": self.fake.acl_default_policy or "allow",
                       "Content-Type": ctype, "Content-Length": str(len(body)), **(headers or {})}
        for k, v in all_headers.items():
            self.send_header(canonical_header(k), v)
        self.end_headers()
        self.wfile.write(body)


@dataclass
class _AgentWrite:
    """Agent write endpoints, each checked against the token's rules (``agent_endpoint.go``:
    service writes need ``service:write``, node maintenance ``node:write``)."""

    fake: ConsulFake
    auth: Authorizer

    def dispatch(self, rest: str, query: dict[str, list[str]], body: bytes) -> None:
        kind, _, target = rest.partition("/")
        action, _, ident = target.partition("/")
        handlers: dict[tuple[str, str], Callable[[], None]] = {
            ("service", "register"): lambda: self._register(body),
            ("service", "deregister"): lambda: self._on_service(ident, self.fake.deregister),
            ("service", "maintenance"): lambda: self._service_maintenance(ident, query),
            ("maintenance", ""): lambda: self._node_maintenance(query),
            ("check", "update"): lambda: self._update(ident, body),
        }
        if kind == "check" and action in ("pass", "warn", "fail"):
            status = {"pass": "passing", "warn": "warning", "fail": "critical"}[action]
            self._check(ident, status, query.get("note", [""])[0])
            return
        handler = handlers.get((kind, action))
        if handler is None:
            raise _HttpError(404, f"unsupported agent endpoint /v1/agent/{rest}")
        handler()

    def _deny(self, resource: str, name: str) -> None:
        """``acl/errors.go`` ``PermissionDeniedByACLError.Error``."""
        if not self.auth.allows(resource, name, "write"):
            raise _HttpError(403, f"Permission denied: accessor  lacks permission "
                                  f"'{resource}:write' on {resource} {name}")

    def _register(self, body: bytes) -> None:
        try:
            doc = json.loads(body or b"{}")
        except json.JSONDecodeError as exc:
            raise _HttpError(400, f"Request decode failed: {exc}") from None
        self._deny("service", str(_fold(doc).get("name") or ""))
        self.fake._register(doc, self.fake.default_node)

    def _service_name(self, sid: str) -> str:
        svc = self.fake._services.get((self.fake.default_node, sid))
        if svc is None:
            raise _HttpError(404, f'Unknown service ID "{sid}"')
        return str(svc["Service"])

    def _on_service(self, sid: str, action: Callable[[str], None]) -> None:
        self._deny("service", self._service_name(sid))
        action(sid)

    def _service_maintenance(self, sid: str, query: dict[str, list[str]]) -> None:
        if "enable" not in query:
            raise _HttpError(400, "Missing value for enable")
        on = _flag(query, "enable")
        reason = query.get("reason", [""])[0]
        self._on_service(sid, lambda s: self.fake.maintenance(s, on, reason))

    def _node_maintenance(self, query: dict[str, list[str]]) -> None:
        if "enable" not in query:
            raise _HttpError(400, "Missing value for enable")
        self._deny("node", self.fake.default_node)
        self.fake.node_maintenance(_flag(query, "enable"), query.get("reason", [""])[0])

    def _check(self, cid: str, status: str, output: str) -> None:
        check = self.fake._checks.get((self.fake.default_node, cid))
        if check is None:
            raise _HttpError(404, f'Unknown check ID "{cid}"')
        if check["ServiceName"]:
            self._deny("service", check["ServiceName"])
        else:
            self._deny("node", self.fake.default_node)
        self.fake.update_check(cid, status, output)

    def _update(self, cid: str, body: bytes) -> None:
        doc = json.loads(body or b"{}")
        self._check(cid, doc.get("Status", ""), doc.get("Output", ""))
