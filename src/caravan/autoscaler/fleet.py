"""``FleetScaleTarget``: the ``ScaleTarget`` over a ``ReplicaFleet``, the replica
processes of ``caravan up``'s supervisor (the dev stack); ``NomadScaleTarget`` is the
production one. ``PrometheusReplicaCounts`` reads counts only, from Prometheus.

The supervisor implements ``ReplicaFleet``: it knows which replica processes are
ready (health SERVING, registered) and which are still starting, and it starts new
replicas or drains the newest ones on ``scale_to``. A local fleet has no deployments,
so it is always ready. Thread-safety is the fleet's (the supervisor uses one lock).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from caravan.autoscaler.ports import MetricsError, MetricsSource, ScaleError, TargetStatus
from caravan.observability.metric_names import JOB_TRITON


class ReplicaFleet(Protocol):
    def counts(self, model: str) -> tuple[int, int]:  # (ready, starting)
        """(ready, starting) replica processes of ``model``; KeyError for an unknown model."""
        ...

    def scale_to(self, model: str, count: int) -> None:  # starts replicas or drains the newest ones
        """Start replicas or drain the newest ones until ``count`` remain."""
        ...


class FleetScaleTarget:
    """Implements ``ScaleTarget`` over a ``ReplicaFleet``."""

    def __init__(self, fleet: ReplicaFleet) -> None:
        self.fleet = fleet

    def status(self, model: str) -> TargetStatus:
        try:
            ready, starting = self.fleet.counts(model)
        except KeyError:
            raise ScaleError(f"model {model!r} is not run by this local stack") from None
        # The fleet restarts nothing by itself, so what exists is what was asked for.
        return TargetStatus(running=ready, starting=starting, desired=ready + starting)

    def scale(self, model: str, count: int, reason: str, meta: Mapping[str, str]) -> None:
        if count < 0:
            raise ScaleError(f"count: must be >= 0 (got {count})")
        try:
            self.fleet.scale_to(model, count)
        except KeyError:
            raise ScaleError(f"model {model!r} is not run by this local stack") from None
        except (OSError, RuntimeError) as exc:
            raise ScaleError(f"scaling {model!r} to {count} failed: {exc}") from exc

    def release(self, model: str, reason: str) -> None:
        """Nothing to give back: a local fleet starts every replica it is asked for."""


class PrometheusReplicaCounts:
    """A read-only ``ScaleTarget`` for ``caravan autoscale --explain`` against a running
    ``caravan up``: replicas = scrape targets of the model that are up, as Prometheus
    sees them (job ``triton``, target label ``caravan_model``, see caravan.local.prometheus).
    ``scale`` always raises ScaleError: use it only with ``--explain`` / dry runs.
    """

    QUERY = f'count(up{{job="{JOB_TRITON}", caravan_model="%s"}} == 1) or vector(0)'

    def __init__(self, metrics: MetricsSource) -> None:
        self.metrics = metrics

    def status(self, model: str) -> TargetStatus:
        try:
            n = int(self.metrics.query(self.QUERY % model))
        except MetricsError as exc:
            raise ScaleError(f"cannot count replicas of {model!r}: {exc}") from None
        return TargetStatus(running=n, starting=0, desired=n)

    def scale(self, model: str, count: int, reason: str, meta: Mapping[str, str]) -> None:
        raise ScaleError("read-only replica counts from Prometheus: cannot scale (use --explain)")

    def release(self, model: str, reason: str) -> None:
        raise ScaleError("read-only replica counts from Prometheus: cannot release (use --explain)")
