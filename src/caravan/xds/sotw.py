"""State-of-the-world ADS: the per-stream protocol state machine (no I/O).

``SotwSession`` turns (request, snapshot) and (snapshot change) events into the
responses to send, keeping the protocol rules:

* a request whose ``response_nonce`` is not the last nonce sent for its type is
  stale and ignored entirely;
* ACK vs NACK is decided by ``error_detail``, never by ``version_info``;
* after a NACK of version V, V is never sent again on this stream: the type is
  parked until the snapshot yields a different version;
* a response goes out only when the version for the subscribed names differs from
  the last one sent (or from ``version_info`` of a reconnecting client's first
  request): unchanged resources are never pushed;
* EDS requests naming a cluster the snapshot lacks get an empty ClusterLoadAssignment;
* a request naming more than ``limits.MAX_RESOURCE_NAMES`` resources is refused
  (``Outcome.refused``: the server closes the stream) before any work is done;
* responses are produced in CDS, EDS, LDS, RDS order.

The EDS/RDS response version is the hash over the requested names' versions, so
it changes when a subscribed resource (or the subscription itself) changes.
Not thread-safe: one session per stream, driven by that stream's task.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2

from caravan.xds.limits import MAX_RESOURCE_NAMES, names_error
from caravan.xds.resources import pack
from caravan.xds.snapshot import (
    ENDPOINT,
    TYPE_ORDER,
    WILDCARD_TYPES,
    Snapshot,
    VersionedResource,
    resource_version,
    set_version,
)


@dataclass
class TypeState:
    """What one stream knows about one resource type."""

    subscribed: bool = False
    names: frozenset[str] = frozenset()
    client_version: str = ""  # version_info of the stream's first request (reconnect)
    sent_version: str | None = None
    sent_nonce: str = ""
    acked_version: str = ""
    nacked_version: str | None = None


@dataclass(frozen=True)
class Nack:
    type_url: str
    version: str
    message: str


@dataclass
class Outcome:
    """What handling one event produced."""

    responses: list[discovery_pb2.DiscoveryResponse] = field(default_factory=list)
    acked: tuple[str, str] | None = None  # (type URL, version)
    nack: Nack | None = None
    stale: bool = False
    unknown_type: bool = False
    refused: str | None = None  # the stream must be closed with this message


def empty_assignment(name: str) -> VersionedResource:
    """An empty ClusterLoadAssignment for a cluster the snapshot lacks."""
    cla = pack(endpoint_pb2.ClusterLoadAssignment(cluster_name=name))
    return VersionedResource(name, resource_version(cla), cla)


def select(snap: Snapshot, type_url: str, names: frozenset[str]) -> list[VersionedResource] | None:
    """The resources a subscription gets, sorted by name; None when nothing should be
    sent (a named-only type with no names). Wildcard types with no names get all."""
    have = snap.get(type_url)
    if not names:
        if type_url in WILDCARD_TYPES:
            return [have[n] for n in sorted(have)]
        return None
    out: list[VersionedResource] = []
    for n in sorted(names):
        if n in have:
            out.append(have[n])
        elif type_url == ENDPOINT:
            out.append(empty_assignment(n))
    return out


def is_nack(req: discovery_pb2.DiscoveryRequest) -> bool:
    """A NACK carries an error_detail (status code or message), whatever its version."""
    return req.HasField("error_detail") and (
        req.error_detail.code != 0 or bool(req.error_detail.message)
    )


class SotwSession:
    """Protocol state of one SotW ADS stream."""

    def __init__(self) -> None:
        self.types: dict[str, TypeState] = {}
        self.node_id = ""
        self.cluster = ""
        self._nonces = itertools.count(1)

    def handle_request(self, req: discovery_pb2.DiscoveryRequest, snap: Snapshot) -> Outcome:
        """Apply one DiscoveryRequest; returns the responses due and any ACK/NACK seen."""
        if req.node.id:
            self.node_id, self.cluster = req.node.id, req.node.cluster
        refused = names_error("the request", len(req.resource_names), MAX_RESOURCE_NAMES)
        if refused is not None:
            return Outcome(refused=refused)
        if req.type_url not in TYPE_ORDER:
            return Outcome(unknown_type=True)
        st = self.types.setdefault(req.type_url, TypeState())
        out = Outcome()
        if req.response_nonce:
            if req.response_nonce != st.sent_nonce:
                return Outcome(stale=True)
            if is_nack(req):
                st.nacked_version = st.sent_version
                out.nack = Nack(req.type_url, st.sent_version or "", req.error_detail.message)
            else:
                st.acked_version = req.version_info
                out.acked = (req.type_url, req.version_info)
        elif not st.subscribed:
            st.client_version = req.version_info
        st.subscribed = True
        st.names = frozenset(req.resource_names)
        out.responses = self.pending(snap)
        return out

    def handle_snapshot(self, snap: Snapshot) -> Outcome:
        """The snapshot changed: responses due for every subscribed type, in ADS order."""
        return Outcome(responses=self.pending(snap))

    def pending(self, snap: Snapshot) -> list[discovery_pb2.DiscoveryResponse]:
        out: list[discovery_pb2.DiscoveryResponse] = []
        for type_url in TYPE_ORDER:
            resp = self._response_for(type_url, snap)
            if resp is not None:
                out.append(resp)
        return out

    def _response_for(
        self, type_url: str, snap: Snapshot
    ) -> discovery_pb2.DiscoveryResponse | None:
        st = self.types.get(type_url)
        if st is None or not st.subscribed:
            return None
        selected = select(snap, type_url, st.names)
        if selected is None:
            return None
        version = snap.version(type_url) if not st.names else set_version(selected)
        if version == st.nacked_version:
            return None  # parked until the snapshot changes
        if st.sent_version is None and version == st.client_version:
            return None  # a reconnecting client already has this version
        if version == st.sent_version:
            return None
        st.sent_version = version
        st.sent_nonce = str(next(self._nonces))
        return discovery_pb2.DiscoveryResponse(
            version_info=version,
            type_url=type_url,
            nonce=st.sent_nonce,
            resources=[vr.resource for vr in selected],
        )
