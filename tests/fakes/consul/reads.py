"""The fake Consul's reads: health of a service, datacenter-wide blocking reads, agent/self.

Endpoints
    ``GET /v1/health/service/:name`` (``agent/health_endpoint.go`` ``healthServiceNodes``) ->
    ``[{Node, Service, Checks}]``; ``?passing`` parsed like Go's ``strconv.ParseBool`` (bare
    flag = true; anything else: 400 ``Invalid value for ?passing``), ``?dc``, ``?stale``,
    blocking ``?index=&wait=`` (``agent/http.go`` ``parseWait``: 400 ``Invalid wait time`` /
    ``Invalid index``; wait default 5m, max 10m, plus up to wait/16 jitter).
    ``GET /v1/agent/self`` (needs ``agent:read``; what Prometheus asks when its config names
    no datacenter). Datacenter-wide reads, blocking too (``blockingquery.Query``): ``GET
    /v1/health/state/:state`` (``Health.ChecksInState``: ``any`` or one status, 400 for
    another), ``GET /v1/catalog/services`` (``Catalog.ListServices``: name -> tags) and
    ``GET /v1/catalog/nodes`` (``Catalog.ListNodes``); the first two take the ``?filter``
    subset discovery sends (``ServiceName == "a" or ...``; anything else is 400), applied
    before the ACL filter as Consul does (``filterHealthChecks``: node:read and, for a
    service check, service:read; ``filterServices``: service:read; ``filterNodes``:
    node:read).

Headers (``agent/http.go``)
    ``setMeta`` sets ``X-Consul-Index`` (never 0, ``setIndex``), ``X-Consul-LastContact``,
    ``X-Consul-KnownLeader``, ``X-Consul-Effective-Consistency`` and, only when true,
    ``X-Consul-Results-Filtered-By-ACLs`` -- only on success: an error answer carries no meta.

Failures on the agent's RPC path
    * ``lose_leader(hold_s)``: agent up, servers without a leader. A query (blocked ones
      included) is held up to ``hold_s`` (``rpc_hold_timeout``, 7 s in Consul) while the agent
      retries (``agent/consul/client.go`` ``RPC`` / ``rpc.go`` ``canRetry``: no-leader errors are
      always retried); if a leader returns meanwhile it is answered, else 500 ``No cluster
      leader`` (``agent/structs/errors.go``). ``?stale`` reads are served by a follower: 200 with
      ``X-Consul-KnownLeader: false`` (``rpc.go`` ``canServeReadRequest`` / ``SetQueryMeta``).
    * ``lose_servers()``: the agent knows no server: 500 ``No known Consul servers`` at once,
      stale or not (``client.go`` ``RPC`` returns ``ErrNoServers`` before retrying).
    * ``?dc`` other than the agent's: 500 ``No path to datacenter`` (``rpc.go`` ``forwardDC``).

Blocked reads wake on the catalog writes described in ``catalog``; ``reset_index`` also
answers every blocked read at once (the state store's ``AbandonCh`` after a snapshot
restore). A blocked query whose client hung up ends within 0.1 s (Go's net/http cancels
the request's context), so ``open_connections()`` counts what the client holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tests.fakes.consul.acl import Authorizer
from tests.fakes.consul.errors import NO_DC_PATH, NO_LEADER, NO_SERVERS, HttpError
from tests.fakes.consul.query import Query

if TYPE_CHECKING:
    from tests.fakes.consul.fake import ConsulFake

HANGUP_POLL_S = 0.1
CHECK_STATES = ("any", "passing", "warning", "critical")


@dataclass(frozen=True)
class Answer:
    """One read's answer: status, JSON body, headers (``setMeta``'s)."""

    code: int
    body: Any
    headers: dict[str, str]


def health(fake: ConsulFake, service: str, q: Query, token: str, generation: int) -> Answer | None:
    """``healthServiceNodes`` + ``Health.ServiceNodes``; None = drop the connection."""
    deadline = time.monotonic() + q.wait_s + fake._rng.uniform(0, q.wait_s / 16)
    with fake._cond:
        while True:
            if generation != fake._generation or _hung_up(fake):
                return None
            _route_rpc(fake, q, generation)  # raises 500s; holds while leaderless
            auth = fake._authorizer(token)
            index = fake._index_for(service)
            blocked = fake._stalled or (q.min_index > 0 and index <= q.min_index)
            remaining = deadline - time.monotonic()
            if not blocked or (remaining <= 0 and not fake._stalled):
                return _answer(fake, service, auth, token, q, index)
            fake._cond.wait(min(remaining, HANGUP_POLL_S) if remaining > 0 else 0.05)


def _blocking_read(fake: ConsulFake, table: str, q: Query, token: str, generation: int,
                   render: Callable[[Authorizer], tuple[Any, bool]]) -> Answer | None:
    """``blockingquery.Query`` over one table: answer at once when the table's index is
    above ``?index``; else wait until the table is written (its memdb watch fires) with
    the index past ``?index``, a snapshot restore (``AbandonCh``) or the wait's end, and
    answer with the index then. An index bump without a write (``catalogInsertService``
    on the nodes entry) wakes nothing. ``render`` -> (body, filtered by ACLs)."""
    deadline = time.monotonic() + q.wait_s + fake._rng.uniform(0, q.wait_s / 16)
    with fake._cond:
        abandon, seen = fake._abandon, None
        while True:
            if generation != fake._generation or _hung_up(fake):
                return None
            _route_rpc(fake, q, generation)
            auth = fake._authorizer(token)
            index, version = fake._table_index[table], fake._table_version[table]
            remaining = deadline - time.monotonic()
            if (q.min_index == 0 or fake._abandon != abandon or remaining <= 0
                    or (version != seen and index > q.min_index)):
                body, filtered = render(auth)
                return Answer(200, body, _meta(fake, index, q, filtered and token != ""))
            seen = version
            fake._cond.wait(min(remaining, HANGUP_POLL_S))


def checks_in_state(fake: ConsulFake, state: str, q: Query, flt: frozenset[str] | None,
                    token: str, generation: int) -> Answer | None:
    """``Health.ChecksInState``: ``state`` any or one status (``checksInStateTxn``), the
    ``?filter`` first, then ``aclFilter.filterHealthChecks`` (node:read on the check's
    node and, for a service check, service:read on its service)."""
    if state not in CHECK_STATES:
        raise HttpError(400, f"Bad check state: {state}")

    def render(auth: Authorizer) -> tuple[Any, bool]:
        checks = [dict(c) for _, c in sorted(fake._checks.items())
                  if state == "any" or c["Status"] == state]
        checks = [c for c in checks if flt is None or c["ServiceName"] in flt]
        kept = [c for c in checks if auth.allows("node", c["Node"])
                and (not c["ServiceName"] or auth.allows("service", c["ServiceName"]))]
        return kept, len(kept) < len(checks)
    return _blocking_read(fake, "checks", q, token, generation, render)


def catalog_services(fake: ConsulFake, q: Query, flt: frozenset[str] | None, token: str,
                     generation: int) -> Answer | None:
    """``Catalog.ListServices``: name -> tags of every instance (``servicesTagsByName``),
    ``?filter`` over the instances first, then ``filterServices`` (service:read)."""
    def render(auth: Authorizer) -> tuple[Any, bool]:
        tags: dict[str, set[str]] = {}
        for svc in fake._services.values():
            if flt is None or svc["Service"] in flt:
                tags.setdefault(svc["Service"], set()).update(svc["Tags"])
        kept = {n: sorted(t) for n, t in sorted(tags.items()) if auth.allows("service", n)}
        return kept, len(kept) < len(tags)
    return _blocking_read(fake, "services", q, token, generation, render)


def catalog_nodes(fake: ConsulFake, q: Query, token: str, generation: int) -> Answer | None:
    """``Catalog.ListNodes``: every node, then ``filterNodes`` (node:read)."""
    def render(auth: Authorizer) -> tuple[Any, bool]:
        nodes = [dict(n) for _, n in sorted(fake._nodes.items())]
        kept = [n for n in nodes if auth.allows("node", n["Node"])]
        return kept, len(kept) < len(nodes)
    return _blocking_read(fake, "nodes", q, token, generation, render)


def _hung_up(fake: ConsulFake) -> bool:
    """Whether the client of the request this thread serves closed its connection. Go's
    net/http notices it (a background read on the connection cancels the request's
    context) and the blocked query ends; so does the fake, within ``HANGUP_POLL_S``, so
    ``open_connections()`` counts what the client really holds."""
    probe = getattr(fake._local, "gone", None)
    return bool(probe is not None and probe())


def _meta(fake: ConsulFake, index: int, q: Query, filtered: bool) -> dict[str, str]:
    """``setMeta``: index (never 0), last contact, known leader, consistency, and the
    filtered flag only when true."""
    leaderless = fake._leader.state != "ok"
    headers = {"X-Consul-Index": str(max(index, 1)),
               "X-Consul-LastContact": str(_last_contact_ms(fake)),
               "X-Consul-KnownLeader": "false" if leaderless else "true",
               "X-Consul-Effective-Consistency": "stale" if q.stale else "leader"}
    if filtered:
        headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
    return headers


def _route_rpc(fake: ConsulFake, q: Query, generation: int) -> None:
    """The agent's RPC path: no servers, wrong DC, no leader (held, then 500)."""
    if fake._leader.state == "no_servers":
        raise HttpError(500, NO_SERVERS)
    if q.dc not in ("", fake.datacenter):
        raise HttpError(500, NO_DC_PATH)
    if fake._leader.state == "ok" or q.stale:
        return
    hold_until = time.monotonic() + fake._leader.hold_s
    while fake._leader.state == "no_leader" and generation == fake._generation:
        remaining = hold_until - time.monotonic()
        if remaining <= 0:
            raise HttpError(500, NO_LEADER)
        fake._cond.wait(remaining)
    if fake._leader.state == "no_servers":
        raise HttpError(500, NO_SERVERS)


def _answer(fake: ConsulFake, service: str, auth: Authorizer, token: str, q: Query,
            index: int) -> Answer:
    entries = fake._entries(service)
    kept = [e for e in entries if auth.allows("node", e["Node"]["Node"])
            and auth.allows("service", e["Service"]["Service"])]
    headers = _meta(fake, index, q, len(kept) < len(entries) and token != "")
    if q.passing:
        kept = [e for e in kept if all(c["Status"] == "passing" for c in e["Checks"])]
    return Answer(200, kept + list(fake._raw.get(service, [])), headers)


def agent_self(fake: ConsulFake, token: str) -> dict[str, Any]:
    """``GET /v1/agent/self`` (``agent_endpoint.go`` ``AgentSelf``): needs ``agent:read``
    on the agent's node, else 403 ``Permission denied``. Local: works without a leader."""
    with fake._cond:
        auth = fake._authorizer(token)
    if not auth.allows("agent", fake.default_node):
        raise HttpError(403, "Permission denied: accessor  lacks permission 'agent:read' "
                        f"on agent {fake.default_node}")
    return {"Config": {"Datacenter": fake.datacenter, "NodeName": fake.default_node},
            "Member": {"Name": fake.default_node}}


def _last_contact_ms(fake: ConsulFake) -> int:
    if fake._leader.state == "ok":
        return 0
    return int((time.monotonic() - fake._leader.lost_at) * 1000)
