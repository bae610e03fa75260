"""Versioned xDS snapshots: content-hash versions and the pre-push consistency check.

A ``Snapshot`` is immutable by contract (frozen dataclass over read-only mappings;
the ``Any`` protos inside must not be mutated once a snapshot is built), so one
snapshot is shared by every ADS stream without copying.

Versions are content hashes (sha256 of protobuf's deterministic serialization), so
two control-plane instances fed the same state produce identical versions. A
ClusterLoadAssignment's version folds in its cluster's version: a changed cluster
always comes with a new EDS version, so Envoy never leaves it warming.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2

from caravan.errors import CaravanError

_PREFIX = "type.googleapis.com/envoy.config."
CLUSTER = _PREFIX + "cluster.v3.Cluster"
ENDPOINT = _PREFIX + "endpoint.v3.ClusterLoadAssignment"
LISTENER = _PREFIX + "listener.v3.Listener"
ROUTE = _PREFIX + "route.v3.RouteConfiguration"

#: The ADS push order: clusters before their endpoints, listeners before their routes.
TYPE_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
SHORT_NAMES = {CLUSTER: "cds", ENDPOINT: "eds", LISTENER: "lds", ROUTE: "rds"}
#: Types Envoy subscribes to as a wildcard (every resource the server has).
WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})


class SnapshotInconsistent(CaravanError, ValueError):
    """A snapshot references a resource it does not contain. ``problems`` lists each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("inconsistent snapshot: " + "; ".join(problems))


def digest(*parts: bytes | str) -> str:
    """First 16 hex chars of sha256 over ``parts`` (separated, so ("ab","c") != ("a","bc"))."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\x00")
    return h.hexdigest()[:16]


def resource_version(resource: any_pb2.Any, *fold: str) -> str:
    """Content version of one resource, optionally folding in other versions."""
    return digest(resource.SerializeToString(deterministic=True), *fold)


@dataclass(frozen=True)
class VersionedResource:
    """One named resource with its content version. ``resource`` is read-only by contract."""

    name: str
    version: str
    resource: any_pb2.Any


def set_version(resources: Iterable[VersionedResource]) -> str:
    """Version of a set of resources: a hash over sorted ``name=version`` pairs."""
    return digest(*sorted(f"{r.name}={r.version}" for r in resources))


def _freeze(
    resources: Mapping[str, Mapping[str, VersionedResource]],
) -> Mapping[str, Mapping[str, VersionedResource]]:
    return MappingProxyType({t: MappingProxyType(dict(resources.get(t, {}))) for t in TYPE_ORDER})


@dataclass(frozen=True)
class Snapshot:
    """Every resource per type URL, with per-resource and per-type versions.

    Build with ``Snapshot.of``; the mappings are read-only. ``versions[type_url]`` is
    the ``set_version`` of that type's resources.
    """

    resources: Mapping[str, Mapping[str, VersionedResource]]
    versions: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, resources: Mapping[str, Mapping[str, VersionedResource]]) -> Snapshot:
        frozen = _freeze(resources)
        versions = MappingProxyType({t: set_version(frozen[t].values()) for t in TYPE_ORDER})
        return cls(frozen, versions)

    def get(self, type_url: str) -> Mapping[str, VersionedResource]:
        """The resources of ``type_url`` by name (empty for an unknown type)."""
        return self.resources.get(type_url, MappingProxyType({}))

    def version(self, type_url: str) -> str:
        return str(self.versions.get(type_url, ""))

    def to_json(self) -> dict[str, Any]:
        """Versions and resources as JSON-able data (for ``/debug/snapshot``)."""
        from google.protobuf import json_format

        out: dict[str, Any] = {}
        for t in TYPE_ORDER:
            out[SHORT_NAMES[t]] = {
                "version": self.version(t),
                "resources": {
                    name: {
                        "version": vr.version,
                        "resource": json_format.MessageToDict(vr.resource),
                    }
                    for name, vr in sorted(self.get(t).items())
                },
            }
        return out


EMPTY = Snapshot.of({})


def _eds_name(c: cluster_pb2.Cluster) -> str:
    return str(c.eds_cluster_config.service_name or c.name)


def _listener_routes(lst: listener_pb2.Listener) -> list[str]:
    names: list[str] = []
    for chain in lst.filter_chains:
        for f in chain.filters:
            if f.typed_config.Is(hcm_pb2.HttpConnectionManager.DESCRIPTOR):
                hcm = hcm_pb2.HttpConnectionManager()
                f.typed_config.Unpack(hcm)
                if hcm.HasField("rds"):
                    names.append(hcm.rds.route_config_name)
    return names


def consistency_problems(snap: Snapshot) -> list[str]:
    """Pure check: every EDS name a cluster references and every route configuration
    a listener references exists in the snapshot. Returns one message per problem."""
    problems: list[str] = []
    for name, vr in sorted(snap.get(CLUSTER).items()):
        c = cluster_pb2.Cluster()
        vr.resource.Unpack(c)
        if c.type == cluster_pb2.Cluster.EDS and _eds_name(c) not in snap.get(ENDPOINT):
            problems.append(
                f"cluster {name!r} references missing ClusterLoadAssignment {_eds_name(c)!r}"
            )
    for name, vr in sorted(snap.get(LISTENER).items()):
        lst = listener_pb2.Listener()
        vr.resource.Unpack(lst)
        for route in _listener_routes(lst):
            if route not in snap.get(ROUTE):
                problems.append(
                    f"listener {name!r} references missing RouteConfiguration {route!r}"
                )
    return problems


def check_consistency(snap: Snapshot) -> None:
    """Raise ``SnapshotInconsistent`` (listing every problem) unless the snapshot is whole."""
    problems = consistency_problems(snap)
    if problems:
        raise SnapshotInconsistent(problems)
