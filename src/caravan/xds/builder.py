"""The snapshot builder: ``PlatformSpec`` + replica sets -> ``Snapshot``.

``build_snapshot`` is pure. ``SnapshotBuilder`` is the same function with a memo:
per model it keeps the last (ModelSpec, ReplicaSet) and the resources built from it,
so when one model's replicas change only that model's Cluster and
ClusterLoadAssignment are rebuilt; the listener and routes are rebuilt only when the
spec changes. The memo holds one entry per model (bounded). Not thread-safe: use
one builder per task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from caravan.discovery.types import ReplicaSet
from caravan.spec import ModelSpec, PlatformSpec
from caravan.xds import resources as res
from caravan.xds.snapshot import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    Snapshot,
    VersionedResource,
    resource_version,
)


@dataclass(frozen=True)
class ModelResources:
    """One model's cluster and its load assignment (EDS version folds the cluster's)."""

    cluster: VersionedResource
    endpoints: VersionedResource


def build_model(model: ModelSpec, replicas: ReplicaSet | None) -> ModelResources:
    """Build one model's Cluster and ClusterLoadAssignment. Pure."""
    c = res.pack(res.cluster(model))
    c_version = resource_version(c)
    cla = res.pack(res.load_assignment(model.cluster_name, replicas))
    return ModelResources(
        cluster=VersionedResource(model.cluster_name, c_version, c),
        endpoints=VersionedResource(model.cluster_name, resource_version(cla, c_version), cla),
    )


def build_edge(spec: PlatformSpec) -> tuple[VersionedResource, VersionedResource]:
    """Build the listener and the route configuration. Pure."""
    lst = res.pack(res.listener(spec))
    rc = res.pack(res.route_configuration(spec))
    return (
        VersionedResource(res.LISTENER_NAME, resource_version(lst), lst),
        VersionedResource(res.ROUTE_CONFIG_NAME, resource_version(rc), rc),
    )


def assemble(
    edge: tuple[VersionedResource, VersionedResource], models: list[ModelResources]
) -> Snapshot:
    lst, rc = edge
    return Snapshot.of(
        {
            CLUSTER: {m.cluster.name: m.cluster for m in models},
            ENDPOINT: {m.endpoints.name: m.endpoints for m in models},
            LISTENER: {lst.name: lst},
            ROUTE: {rc.name: rc},
        }
    )


def build_snapshot(spec: PlatformSpec, replica_sets: Mapping[str, ReplicaSet]) -> Snapshot:
    """Pure: every model of ``spec`` gets a cluster and a load assignment (empty when
    ``replica_sets`` has no entry for it); sets for models not in the spec are ignored.
    Raises ValueError naming the replica on an invalid weight or port."""
    return SnapshotBuilder().build(spec, replica_sets)


class SnapshotBuilder:
    """``build_snapshot`` with a per-model memo (see module docstring).

    ``rebuilt`` counts models built (not memo hits) by the last ``build`` call.
    """

    def __init__(self) -> None:
        self._models: dict[str, tuple[ModelSpec, ReplicaSet | None, ModelResources]] = {}
        self._edge: tuple[PlatformSpec, tuple[VersionedResource, VersionedResource]] | None = None
        self.rebuilt = 0

    def build(self, spec: PlatformSpec, replica_sets: Mapping[str, ReplicaSet]) -> Snapshot:
        self.rebuilt = 0
        built = [self._model(m, replica_sets.get(m.name)) for m in spec.models]
        names = {m.name for m in spec.models}
        for stale in set(self._models) - names:
            del self._models[stale]
        return assemble(self._edge_for(spec), built)

    def _model(self, model: ModelSpec, replicas: ReplicaSet | None) -> ModelResources:
        hit = self._models.get(model.name)
        if hit is not None and hit[1] == replicas and (hit[0] is model or hit[0] == model):
            return hit[2]
        built = build_model(model, replicas)
        self._models[model.name] = (model, replicas, built)
        self.rebuilt += 1
        return built

    def _edge_for(self, spec: PlatformSpec) -> tuple[VersionedResource, VersionedResource]:
        if self._edge is None or not (self._edge[0] is spec or self._edge[0] == spec):
            self._edge = (spec, build_edge(spec))
        return self._edge[1]
