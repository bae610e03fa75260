"""The autoscaler's own Prometheus metrics, in an injected registry.

Series (label ``model`` on all):
  caravan_autoscaler_current_count            replicas counted as capacity (running + starting)
  caravan_autoscaler_desired_count            what the last decision wanted (clamped)
  caravan_autoscaler_check_value{check}       the check's latest metric value (NaN on error)
  caravan_autoscaler_check_vote{check}        1 up, 0 none, -1 down, NaN error
  caravan_autoscaler_decisions_total{direction,action}
  caravan_autoscaler_last_decision{direction,action,reason}  1 for the latest, one series per model
  caravan_autoscaler_last_decision_timestamp_seconds
  caravan_autoscaler_capacity_exhausted       1 while scale-ups are held at what the cluster
                                              placed (a scale-up could not be placed), else 0

``action`` is one of ``handler.ACTIONS`` (bounded), ``reason`` free text (one series per model).
prometheus_client metrics are thread-safe; ``record`` may be called from any thread.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge

if TYPE_CHECKING:
    from caravan.autoscaler.handler import ScalingDecision

_VOTE = {"up": 1.0, "none": 0.0, "down": -1.0}


class AutoscalerMetrics:
    """Owns the metric objects; one instance per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p = "caravan_autoscaler"
        self.current = Gauge(
            f"{p}_current_count", "Replicas counted as capacity", ["model"], registry=registry
        )
        self.desired = Gauge(
            f"{p}_desired_count",
            "Desired replicas of the last decision",
            ["model"],
            registry=registry,
        )
        self.check_value = Gauge(
            f"{p}_check_value",
            "Latest value of a check's query",
            ["model", "check"],
            registry=registry,
        )
        self.check_vote = Gauge(
            f"{p}_check_vote",
            "A check's vote: 1 up, 0 none, -1 down, NaN error",
            ["model", "check"],
            registry=registry,
        )
        self.decisions = Counter(
            f"{p}_decisions",
            "Scaling decisions",
            ["model", "direction", "action"],
            registry=registry,
        )
        self.last = Gauge(
            f"{p}_last_decision",
            "The latest decision (value 1)",
            ["model", "direction", "action", "reason"],
            registry=registry,
        )
        self.last_ts = Gauge(
            f"{p}_last_decision_timestamp_seconds",
            "When the latest decision was made",
            ["model"],
            registry=registry,
        )
        self.capacity = Gauge(
            f"{p}_capacity_exhausted",
            "1 while scale-ups are held at the count the cluster could place",
            ["model"],
            registry=registry,
        )
        self._last_labels: dict[str, tuple[str, str, str, str]] = {}
        self._lock = threading.Lock()

    def record(self, d: ScalingDecision) -> None:
        """Export one decision."""
        m = d.model
        self.current.labels(m).set(d.current)
        self.desired.labels(m).set(d.desired)
        for r in d.checks:
            v = r.vote
            self.check_value.labels(m, v.check).set(math.nan if v.value is None else v.value)
            vote = math.nan if v.error is not None else _VOTE[v.direction(d.current)]
            self.check_vote.labels(m, v.check).set(vote)
        self.decisions.labels(m, d.direction, d.action).inc()
        labels = (m, d.direction, d.action, d.reason[:200])
        with self._lock:
            old = self._last_labels.get(m)
            if old is not None and old != labels:
                self.last.remove(*old)
            self._last_labels[m] = labels
        self.last.labels(*labels).set(1)
        self.last_ts.labels(m).set(d.at)
        self.capacity.labels(m).set(0 if d.capacity_cap is None else 1)
