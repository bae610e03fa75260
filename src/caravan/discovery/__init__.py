"""Replica discovery: where the control plane learns which replicas serve which model."""

from caravan.discovery.types import HealthStatus, Replica, ReplicaSet, ReplicaSource

__all__ = ["HealthStatus", "Replica", "ReplicaSet", "ReplicaSource"]
