"""Per-stream client state (for ``/debug/clients``) and the control plane's metrics.

``ClientRegistry`` and ``XdsMetrics`` are used from the event loop's thread only
(prometheus_client metrics are themselves thread-safe, so scraping from another
thread is fine). Metrics go into an injected ``CollectorRegistry``, one per process
(or per test), never the global default.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from caravan.xds.snapshot import SHORT_NAMES


def short(type_url: str) -> str:
    """``cds``/``eds``/``lds``/``rds`` for a known type URL, else the URL itself."""
    return SHORT_NAMES.get(type_url, type_url)


@dataclass
class ClientInfo:
    """One connected ADS stream. Mutated by its stream only."""

    stream_id: int
    protocol: str  # "sotw" | "delta"
    peer: str
    connected_at: float
    node_id: str = ""
    cluster: str = ""
    acked: dict[str, str] = field(default_factory=dict)  # type URL -> ACKed version
    nacks: dict[str, int] = field(default_factory=dict)
    last_nack: dict[str, str] = field(default_factory=dict)
    pushes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "protocol": self.protocol,
            "peer": self.peer,
            "node_id": self.node_id,
            "cluster": self.cluster,
            "connected_at": round(self.connected_at, 3),
            "acked_versions": {short(t): v for t, v in sorted(self.acked.items())},
            "nacks": {short(t): n for t, n in sorted(self.nacks.items())},
            "last_nack": {short(t): m for t, m in sorted(self.last_nack.items())},
            "pushes": self.pushes,
        }


class ClientRegistry:
    """The connected streams, by stream id."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._ids = itertools.count(1)
        self._clients: dict[int, ClientInfo] = {}

    def connect(self, protocol: str, peer: str) -> ClientInfo:
        info = ClientInfo(next(self._ids), protocol, peer, self._clock())
        self._clients[info.stream_id] = info
        return info

    def disconnect(self, info: ClientInfo) -> None:
        self._clients.pop(info.stream_id, None)

    def all(self) -> list[ClientInfo]:
        return [self._clients[k] for k in sorted(self._clients)]

    def to_json(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.all()]


class XdsMetrics:
    """Prometheus metrics of the control plane, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.pushes = Counter(
            "caravan_xds_pushes_total",
            "xDS responses sent",
            ["type", "protocol"],
            registry=registry,
        )
        self.acks = Counter(
            "caravan_xds_acks_total", "xDS ACKs received", ["type"], registry=registry
        )
        self.nacks = Counter(
            "caravan_xds_nacks_total", "xDS NACKs received", ["type"], registry=registry
        )
        self.unverified_nacks = Counter(
            "caravan_xds_unverified_nacks_total",
            "xDS NACKs from streams without a node id or an earlier ACK (not alerted on)",
            ["type"],
            registry=registry,
        )
        self.refused = Counter(
            "caravan_xds_refused_streams_total",
            "ADS streams cut off by an abuse limit (too many names, not reading)",
            ["protocol"],
            registry=registry,
        )
        self.clients = Gauge(
            "caravan_xds_connected_clients",
            "connected ADS streams",
            ["protocol"],
            registry=registry,
        )
        self.build_seconds = Histogram(
            "caravan_xds_snapshot_build_seconds",
            "snapshot build time, seconds",
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )
        self.builds = Counter(
            "caravan_xds_snapshot_builds_total",
            "snapshot builds by result",
            ["result"],
            registry=registry,
        )
        self.source_failures = Counter(
            "caravan_xds_source_failures_total",
            "replica source iterator failures (last snapshot kept)",
            registry=registry,
        )
