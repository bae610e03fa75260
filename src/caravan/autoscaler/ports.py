"""The autoscaler's two ports: where metrics come from and what gets scaled.

``MetricsSource``: production and local both use ``PrometheusMetricsSource``.
``ScaleTarget``: ``NomadScaleTarget`` (production) or ``FleetScaleTarget`` (``caravan up``).
Implementations are called from a worker thread (``asyncio.to_thread``), one call at
a time per policy; different policies may call concurrently, so adapters must be
thread-safe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from caravan import errors
from caravan.errors import BackendError


class MetricsError(BackendError):
    """A query failed or gave no usable number (empty, several series, NaN, HTTP error).

    The message names the query. A check that raises this is a check *error*, never 0.
    """


class ScaleError(BackendError):
    """The target refused or failed a scale request (not a "not ready" refusal)."""


class NotReadyError(ScaleError, errors.NotReadyError):
    """The target cannot be scaled right now (e.g. a Nomad deployment is active): skip the round."""


@dataclass(frozen=True)
class Shortfall:
    """The target cannot place what it was asked for (the cluster is full).

    ``reason``: what the target saw (failed placements, a blocked evaluation, allocations
    pending too long); ``placeable``: replicas that exist and can serve (the count the
    cluster holds now); ``releasable``: the stuck request is the autoscaler's own scale
    and ``ScaleTarget.release`` can give it up (Nomad: fail its deployment).
    """

    reason: str
    placeable: int
    releasable: bool = False


@dataclass(frozen=True)
class TargetStatus:
    """A model's replicas as the target sees them.

    ``running``: serving (healthy) replicas; ``starting``: placed but not healthy yet
    (a model still loading), counted as capacity so slow loads do not over-scale;
    ``desired``: what the target was last asked for; ``ready``: False while the target
    cannot take a scale request (an active deployment), so the round is skipped;
    ``shortfall``: set when what was asked cannot be placed; ``last_scaled_at``: clock
    seconds of the group's latest scaling event, when the target keeps them (Nomad), so a
    restarted autoscaler resumes the cooldown.
    """

    running: int
    starting: int
    desired: int
    ready: bool = True
    note: str = ""
    shortfall: Shortfall | None = None
    last_scaled_at: float | None = None

    @property
    def capacity(self) -> int:
        """The count strategies work from: running plus starting."""
        return self.running + self.starting


Points = list[tuple[float, float]]


class MetricsSource(Protocol):
    def query(self, promql: str) -> float:
        """The value of an instant query returning exactly one series.

        Raises MetricsError (naming the query) on HTTP errors, timeouts, zero or
        several series, and NaN/Inf values.
        """
        ...

    def query_range(self, promql: str, start: float, end: float, step_s: float) -> Points:
        """The (time s, value) points of ``promql`` evaluated every ``step_s`` from
        ``start`` to ``end`` (clock seconds), oldest first, for exactly one series.
        Non-finite points are left out. Raises MetricsError (naming the query) on HTTP
        errors, timeouts, zero or several series, or no finite point."""
        ...


class ScaleTarget(Protocol):
    def status(self, model: str) -> TargetStatus:
        """Current replicas of ``model``. Raises ScaleError when it cannot be read."""
        ...

    def scale(self, model: str, count: int, reason: str, meta: Mapping[str, str]) -> None:
        """Ask for ``count`` replicas of ``model``.

        Raises NotReadyError when the target refuses for now (skip the round),
        ScaleError for any other failure.
        """
        ...

    def release(self, model: str, reason: str) -> None:
        """Give up the autoscaler's own request that cannot be placed (a releasable
        ``Shortfall``), so the group can be scaled again. Raises ScaleError."""
        ...
