"""The control plane: ReplicaSource -> debounce -> builder -> cache -> ADS server.

``ControlPlane.run`` consumes replica sets from the source, coalesces them with a
``Debouncer`` (quiet window + max delay from the spec), builds a snapshot with the
incremental ``SnapshotBuilder``, checks it, and installs it in the cache; the ADS
server pushes from there. A failed build or a source error keeps the last snapshot
(Envoy keeps serving the last good config; it keeps its own config if we are gone).

``ControlPlane`` also implements the admin endpoint's ``ControlPlaneState``
(``ready``, ``snapshot_json``, ``clients_json``). All methods run on the event loop
thread; the admin HTTP server must call them there (or accept a racy read of
immutable snapshots and a list copy, which is what these methods return).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from caravan.discovery.types import ReplicaSet, ReplicaSource
from caravan.spec import PlatformSpec
from caravan.xds.builder import SnapshotBuilder
from caravan.xds.cache import SnapshotCache
from caravan.xds.clients import ClientRegistry, XdsMetrics
from caravan.xds.debounce import Debouncer
from caravan.xds.server import XdsServer
from caravan.xds.snapshot import SHORT_NAMES, check_consistency

log = logging.getLogger(__name__)

#: Wait before re-subscribing to a source whose ``updates`` iterator failed, seconds.
SOURCE_RETRY_S = 1.0


class ControlPlane:
    """One control-plane instance. ``run()`` until cancelled; ``port`` once started."""

    def __init__(
        self,
        spec: PlatformSpec,
        source: ReplicaSource,
        registry: CollectorRegistry,
        *,
        host: str | None = None,
        port: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        instance_id: str = "caravan-xds",
    ) -> None:
        self.spec = spec
        self.instance_id = instance_id
        self._source = source
        self._clock = clock
        self.metrics = XdsMetrics(registry)
        self.cache = SnapshotCache()
        self.clients = ClientRegistry()
        self.server = XdsServer(
            self.cache,
            self.clients,
            self.metrics,
            host=spec.control_plane.address if host is None else host,
            port=spec.control_plane.xds_port if port is None else port,
        )
        cp = spec.control_plane
        self._debounce = Debouncer.from_ms(
            cp.debounce_quiet_ms, max(cp.debounce_max_ms, cp.debounce_quiet_ms)
        )
        self._builder = SnapshotBuilder()
        self._sets: dict[str, ReplicaSet] = {}
        self._pending: dict[str, ReplicaSet] = {}
        self._wake = asyncio.Event()
        self.started = asyncio.Event()
        self.became_ready = asyncio.Event()

    # ------------------------------------------------------------ ControlPlaneState

    def ready(self) -> bool:
        """True once the first snapshot is built and the ADS server is listening."""
        return self.cache.ready and self.started.is_set()

    def snapshot_json(self) -> dict[str, Any]:
        snap = self.cache.snapshot
        return {"instance": self.instance_id, "generation": self.cache.generation, **snap.to_json()}

    def clients_json(self) -> list[dict[str, Any]]:
        return self.clients.to_json()

    def discovery_problems(self) -> dict[str, str]:
        """Model -> discovery problem, from a source that reports them (``problems()``)."""
        problems = getattr(self._source, "problems", None)
        return dict(problems()) if callable(problems) else {}

    # ------------------------------------------------------------ running

    @property
    def port(self) -> int:
        return self.server.port

    async def run(self) -> None:
        """Serve until cancelled: start ADS, then consume, debounce and publish."""
        await self.server.start()
        self.started.set()
        log.info("xds listening", extra={"port": self.server.port, "instance": self.instance_id})
        tasks = [asyncio.create_task(self._consume()), asyncio.create_task(self._flush_loop())]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.server.stop(0.5)

    async def _consume(self) -> None:
        names = [m.name for m in self.spec.models]
        while True:
            try:
                async for rs in self._source.updates(names):
                    self.offer(rs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the last snapshot; re-subscribe
                self.metrics.source_failures.inc()
                log.warning(
                    "replica source failed; keeping the last snapshot",
                    extra={"reason": repr(exc), "retry_s": SOURCE_RETRY_S},
                )
            await asyncio.sleep(SOURCE_RETRY_S)

    def offer(self, rs: ReplicaSet) -> None:
        """Queue one replica set for the next debounced build."""
        self._pending[rs.model] = rs
        self._debounce.event(self._clock())
        self._wake.set()

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (deadline := self._debounce.deadline()) is not None:
                delay = deadline - self._clock()
                if delay > 0:
                    await asyncio.sleep(delay)  # new events may move the deadline
                    continue
                self._debounce.fire()
                await self.publish()

    async def publish(self) -> bool:
        """Build from the pending sets and install the snapshot. Returns True when the
        snapshot changed. On a build or consistency error the last snapshot stays."""
        sets = {**self._sets, **self._pending}
        start = time.perf_counter()
        try:
            snap = self._builder.build(self.spec, sets)
            check_consistency(snap)
        except Exception as exc:  # a bad input or a builder bug: never stop serving the last one
            self.metrics.builds.labels("error").inc()
            log.error(
                "snapshot build failed; keeping the last snapshot",
                extra={"reason": f"{type(exc).__name__}: {exc}"},
                exc_info=not isinstance(exc, ValueError),
            )
            self._pending.clear()
            return False
        self.metrics.build_seconds.observe(time.perf_counter() - start)
        self.metrics.builds.labels("ok").inc()
        self._sets, self._pending = sets, {}
        was_ready = self.cache.ready
        changed = self.cache.set_snapshot(snap)
        if changed:
            log.info(
                "snapshot published",
                extra={
                    "generation": self.cache.generation,
                    "rebuilt_models": self._builder.rebuilt,
                    **{SHORT_NAMES[t]: v for t, v in snap.versions.items()},
                },
            )
        if not was_ready:
            await self.server.set_serving(True)
            self.became_ready.set()
            log.info("xds ready", extra={"port": self.server.port, "instance": self.instance_id})
        return changed
