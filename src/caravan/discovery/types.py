"""Core discovery data types and the ``ReplicaSource`` port.

Pure data: no I/O library is imported here. Production (Consul) and local
(file registry written by ``caravan up``) adapters both yield ``ReplicaSet``s.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class HealthStatus(enum.Enum):
    """Maps 1:1 onto Envoy's ``LbEndpoint.health_status``."""

    HEALTHY = "HEALTHY"
    DRAINING = "DRAINING"  # no new requests; in-flight ones finish
    UNHEALTHY = "UNHEALTHY"


@dataclass(frozen=True, order=True)
class Replica:
    """One inference replica (a Triton server, or the local simulator) of one model.

    ``port`` is the gRPC (KServe v2) port; ``metrics_port`` the Prometheus one.
    """

    id: str
    model: str
    address: str
    port: int
    weight: int = 1
    zone: str = ""
    health: HealthStatus = HealthStatus.HEALTHY
    metrics_port: int | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class ReplicaSet:
    """Every known replica of one model, sorted by id (so equal sets compare equal)."""

    model: str
    replicas: tuple[Replica, ...] = field(default=())

    @classmethod
    def of(cls, model: str, replicas: Sequence[Replica]) -> ReplicaSet:
        """Build a set, sorting by replica id for a deterministic order."""
        return cls(model, tuple(sorted(replicas, key=lambda r: r.id)))

    @property
    def serving(self) -> tuple[Replica, ...]:
        """Replicas that may receive new requests."""
        return tuple(r for r in self.replicas if r.health is HealthStatus.HEALTHY)


class ReplicaSource(Protocol):
    """Watches the replicas of a list of models.

    ``updates`` yields a ``ReplicaSet`` whenever a model's replicas may have changed
    (a yield does not guarantee a change; consumers compare). It first yields the
    current set of every model, then changes, until the consuming task is cancelled.
    On a backend error it keeps the last good sets and retries with backoff; it does
    not raise for transient errors.
    """

    def updates(self, models: Sequence[str]) -> AsyncIterator[ReplicaSet]: ...
