"""What discovery watches in Consul, and which models a change touches. Pure: no I/O.

A blocking query holds its HTTP/1.1 connection for its whole wait, so one blocking query
per model would hold one connection per model. Discovery instead keeps a fixed set of
datacenter-wide blocking queries (``WATCHES``) and, when one of them reports a change,
reads the touched models' ``/v1/health/service/:name`` without blocking, one at a time on
one connection. The connections held are ``len(WATCHES) + 1`` whatever the model count.

Why these three (from Consul's source; paths in hashicorp/consul):

- Every blocking read runs ``agent/blockingquery/blockingquery.go`` ``Query``: it answers
  at once when the index the query computes is above ``?index``, else it waits on the
  query's memdb watch set and re-runs it when a watched channel fires, until the index
  moves past ``?index`` or the wait ends (then it answers with the current index). A table
  write that only bumps an index entry, without touching the watched table, wakes nothing.
- ``/v1/health/service/:name`` (``state/catalog.go`` ``checkServiceNodesTxn``) blocks on the
  ``service.<name>`` index entry (``maxIndexAndWatchChForService``). That entry is bumped by
  ``catalogInsertService`` and ``deleteServiceTxn`` (the service's instances), by
  ``ensureCheckTxn`` / ``deleteCheckTxn`` (its checks; a node check bumps every service of
  its node through ``updateAllServiceIndexesOfNode``) and by ``catalogInsertNode`` (a node
  write, also through ``updateAllServiceIndexesOfNode``; ``state/catalog_ce.go``). So an
  answer can change through a write to the services, checks or nodes table, and nothing
  else.
- ``/v1/health/state/any`` (``Health.ChecksInState`` -> ``checksInStateTxn``) has the index
  of the ``checks`` table (``catalogChecksMaxIndex``) and watches an iterator over every
  check: it wakes on every check write -- a status change, a check registered or removed
  (``deleteServiceTxn`` removes an instance's checks), service and node maintenance (the
  ``_service_maintenance:<id>`` / ``_node_maintenance`` checks), ``serfHealth``. Its body
  says which checks changed (each carries ``ModifyIndex``), hence which models.
- ``/v1/catalog/services`` (``Catalog.ListServices`` -> ``state.Services``) has the index of
  the ``services`` table (``catalogServicesMaxIndex``) and watches every service instance:
  it wakes on every instance registered, changed (``ensureServiceTxn`` writes only when
  ``IsSameService`` is false) or deregistered. Its body (names -> tags) cannot say which
  instance changed, so such a change re-reads every model.
- ``/v1/catalog/nodes`` (``Catalog.ListNodes`` -> ``state.Nodes``) watches the nodes table:
  a node's address or datacenter changed by ``ensureNodeTxn`` / ``catalogInsertNode``, which
  touches neither services nor checks (``Node.Address`` is a replica's address when its
  service has none). Its index also moves on service writes (``catalogInsertService``
  bumps the ``nodes`` entry) without waking it. Such a change re-reads every model.

``?filter`` (go-bexpr) is applied by the server before the ACL filter (``ChecksInState``
and ``ListServices``: "we filter the results with ACLs *after* applying the user-supplied
bexpr filter"), so it only shrinks bodies -- it wakes nothing more or less -- and an
``X-Consul-Results-Filtered-By-ACLs`` flag on a filtered watch means the token may not
read something discovery needs. Not chosen: ``?cached`` (the agent's cache still answers a
blocked query on its HTTP connection, so one per model), Consul's streaming backend
(agent-to-server gRPC, not an HTTP API) and ``/v1/internal/ui/*`` (internal, unstable).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CHECKS, SERVICES, NODES = "checks", "services", "nodes"


@dataclass(frozen=True)
class WatchSpec:
    """One datacenter-wide blocking query: ``name`` (a metric/log label), the path and its
    fixed query parameters; ``per_model`` when its body says which models changed."""

    name: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    per_model: bool = False


def bexpr_string(text: str) -> str:
    """A go-bexpr double-quoted string literal (backslash and quote escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def service_filter(services: Sequence[str], node_checks: bool = False) -> str:
    """``ServiceName == "a" or ServiceName == "b"``; ``node_checks`` adds ``ServiceName ==
    ""`` (node checks have no service)."""
    names = ([""] if node_checks else []) + sorted(set(services))
    return " or ".join(f"ServiceName == {bexpr_string(n)}" for n in names)


def watch_specs(services: Sequence[str]) -> tuple[WatchSpec, ...]:
    """The blocking queries covering every change to the ``services``' health answers."""
    return (
        WatchSpec(CHECKS, "/v1/health/state/any",
                  (("filter", service_filter(services, node_checks=True)),), per_model=True),
        WatchSpec(SERVICES, "/v1/catalog/services", (("filter", service_filter(services)),)),
        WatchSpec(NODES, "/v1/catalog/nodes"),
    )


def check_fingerprints(body: Any, nodes: Mapping[str, frozenset[str]]) -> dict[str, str] | None:
    """Per service of ``nodes`` (service -> the nodes its instances are on): a digest of the
    checks in a ``/v1/health/state/any`` body that can change its health answer -- its own
    checks and the node checks of its nodes, ``ModifyIndex`` included (so a check that
    flipped and flipped back still differs). None when ``body`` is not a list of objects."""
    if not isinstance(body, list) or not all(isinstance(c, dict) for c in body):
        return None
    out: dict[str, str] = {}
    for service, on_nodes in nodes.items():
        mine = [c for c in body if c.get("ServiceName") == service
                or (not c.get("ServiceID") and c.get("Node") in on_nodes)]
        text = json.dumps(sorted(mine, key=lambda c: (str(c.get("Node")), str(c.get("CheckID")))),
                          sort_keys=True, default=str)
        out[service] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return out


def entry_nodes(body: Any) -> frozenset[str]:
    """The node names in a ``/v1/health/service/:name`` body (malformed entries ignored)."""
    if not isinstance(body, list):
        return frozenset()
    names = (e.get("Node", {}).get("Node") for e in body
             if isinstance(e, dict) and isinstance(e.get("Node"), dict))
    return frozenset(n for n in names if isinstance(n, str))
