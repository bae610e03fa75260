"""Incremental (delta) ADS: the per-stream protocol state machine (no I/O).

``DeltaSession`` tracks, per type, the names the client subscribed to (or a
wildcard), and the version of every resource the client has (from
``initial_resource_versions`` on reconnect, then from what was sent). Rules:

* only resources whose version differs from the client's are sent;
* resources the client has that left the snapshot go in ``removed_resources``
  (EDS names the snapshot lacks get an empty ClusterLoadAssignment instead, as in SotW);
* subscription changes are honoured even when the request's nonce is stale;
  only ACK/NACK bookkeeping needs a current nonce;
* a NACKed (name, version) is never resent; it goes out again only once the
  snapshot has a different version of that resource;
* updates go out in CDS, EDS, LDS, RDS order, then removals in the same order;
* a request naming more than ``limits.MAX_RESOURCE_NAMES`` resources (subscribe plus
  unsubscribe), or a subscription growing past it for one type, is refused
  (``Outcome.refused``: the server closes the stream).

Not thread-safe: one session per stream, driven by that stream's task.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from caravan.xds.limits import MAX_RESOURCE_NAMES, names_error
from caravan.xds.snapshot import ENDPOINT, TYPE_ORDER, WILDCARD_TYPES, Snapshot, VersionedResource
from caravan.xds.sotw import Nack, Outcome, empty_assignment, is_nack

#: Unacknowledged responses remembered per stream (oldest dropped beyond this).
MAX_OUTSTANDING = 256


@dataclass
class DeltaTypeState:
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    client: dict[str, str] = field(default_factory=dict)  # name -> version the client has
    nacked: dict[str, str] = field(default_factory=dict)  # name -> version it rejected
    started: bool = False
    acked_version: str = ""


@dataclass(frozen=True)
class _Sent:
    type_url: str
    system_version: str
    versions: tuple[tuple[str, str], ...]  # (name, version) sent as updates


class DeltaSession:
    """Protocol state of one delta ADS stream."""

    def __init__(self) -> None:
        self.types: dict[str, DeltaTypeState] = {}
        self.node_id = ""
        self.cluster = ""
        self._nonces = itertools.count(1)
        self._outstanding: dict[str, _Sent] = {}

    def handle_request(self, req: discovery_pb2.DeltaDiscoveryRequest, snap: Snapshot) -> Outcome:
        if req.node.id:
            self.node_id, self.cluster = req.node.id, req.node.cluster
        count = len(req.resource_names_subscribe) + len(req.resource_names_unsubscribe)
        refused = names_error("the request", count, MAX_RESOURCE_NAMES)
        if refused is not None:
            return Outcome(refused=refused)
        if req.type_url not in TYPE_ORDER:
            return Outcome(unknown_type=True)
        st = self.types.setdefault(req.type_url, DeltaTypeState())
        out = Outcome()
        self._subscriptions(st, req)
        refused = names_error("the stream's subscription", len(st.names), MAX_RESOURCE_NAMES)
        if refused is not None:
            return Outcome(refused=refused)
        if req.response_nonce:
            sent = self._outstanding.pop(req.response_nonce, None)
            if sent is None:
                out.stale = True
            elif is_nack(req):
                st.nacked.update(dict(sent.versions))
                out.nack = Nack(req.type_url, sent.system_version, req.error_detail.message)
            else:
                st.acked_version = sent.system_version
                out.acked = (req.type_url, sent.system_version)
        out.responses = self.pending(snap)
        return out

    def handle_snapshot(self, snap: Snapshot) -> Outcome:
        return Outcome(responses=self.pending(snap))

    def _subscriptions(self, st: DeltaTypeState, req: discovery_pb2.DeltaDiscoveryRequest) -> None:
        subscribe = set(req.resource_names_subscribe)
        if not st.started:
            st.started = True
            st.client.update(dict(req.initial_resource_versions))
            if not subscribe and req.type_url in WILDCARD_TYPES:
                st.wildcard = True
        if "*" in subscribe:
            st.wildcard = True
            subscribe.discard("*")
        st.names |= subscribe
        for name in req.resource_names_unsubscribe:
            if name == "*":
                st.wildcard = False
            st.names.discard(name)
            st.client.pop(name, None)
            st.nacked.pop(name, None)

    def pending(self, snap: Snapshot) -> list[discovery_pb2.DeltaDiscoveryResponse]:
        updates: list[discovery_pb2.DeltaDiscoveryResponse] = []
        removals: list[discovery_pb2.DeltaDiscoveryResponse] = []
        for type_url in TYPE_ORDER:
            st = self.types.get(type_url)
            if st is None:
                continue
            changed = self._changed(type_url, st, snap)
            if changed:
                updates.append(self._respond(type_url, snap, changed, []))
            removed = self._removed(type_url, st, snap)
            if removed:
                removals.append(self._respond(type_url, snap, [], removed))
        return updates + removals

    def _wanted(self, type_url: str, st: DeltaTypeState, snap: Snapshot) -> list[VersionedResource]:
        have = snap.get(type_url)
        names = set(have) | st.names if st.wildcard else st.names
        out: list[VersionedResource] = []
        for n in sorted(names):
            if n in have:
                out.append(have[n])
            elif type_url == ENDPOINT:
                out.append(empty_assignment(n))
        return out

    def _changed(
        self, type_url: str, st: DeltaTypeState, snap: Snapshot
    ) -> list[VersionedResource]:
        return [
            vr
            for vr in self._wanted(type_url, st, snap)
            if st.client.get(vr.name) != vr.version and st.nacked.get(vr.name) != vr.version
        ]

    def _removed(self, type_url: str, st: DeltaTypeState, snap: Snapshot) -> list[str]:
        if type_url == ENDPOINT:
            return []
        have = snap.get(type_url)
        return sorted(n for n in st.client if n not in have)

    def _respond(
        self, type_url: str, snap: Snapshot, changed: list[VersionedResource], removed: list[str]
    ) -> discovery_pb2.DeltaDiscoveryResponse:
        st = self.types[type_url]
        for vr in changed:
            st.client[vr.name] = vr.version
        for name in removed:
            st.client.pop(name, None)
        nonce = str(next(self._nonces))
        system_version = snap.version(type_url)
        if len(self._outstanding) >= MAX_OUTSTANDING:  # a client that never ACKs
            del self._outstanding[next(iter(self._outstanding))]
        self._outstanding[nonce] = _Sent(
            type_url, system_version, tuple((v.name, v.version) for v in changed)
        )
        return discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=system_version,
            type_url=type_url,
            nonce=nonce,
            resources=[
                discovery_pb2.Resource(name=vr.name, version=vr.version, resource=vr.resource)
                for vr in changed
            ],
            removed_resources=removed,
        )
