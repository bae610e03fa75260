"""``SnapshotCache``: the current snapshot, and change notification for ADS streams.

Async-safety: every method must be called from the event loop's thread (the
control plane and all ADS streams share one loop), so no lock is needed. Listeners
are plain callbacks run synchronously inside ``set_snapshot``; they must not block
(an ADS stream just enqueues a wake-up).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from caravan.xds.snapshot import EMPTY, TYPE_ORDER, Snapshot

Listener = Callable[[Snapshot], None]


class SnapshotCache:
    """Holds one snapshot. ``set_snapshot`` with identical versions is a no-op."""

    def __init__(self) -> None:
        self._snapshot = EMPTY
        self._ready = False
        self._generation = 0
        self._listeners: list[Listener] = []
        self._changed = asyncio.Event()

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def ready(self) -> bool:
        """True once a first snapshot was set."""
        return self._ready

    @property
    def generation(self) -> int:
        """Incremented on every effective change."""
        return self._generation

    def set_snapshot(self, snap: Snapshot) -> bool:
        """Install ``snap``; returns False (and notifies nobody) when every per-type and
        per-resource version equals the current one."""
        first = not self._ready
        self._ready = True
        if not first and _same(snap, self._snapshot):
            return False
        self._snapshot = snap
        self._generation += 1
        for listener in list(self._listeners):
            listener(snap)
        self._changed.set()
        self._changed = asyncio.Event()
        return True

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    async def wait_changed(self, generation: int) -> Snapshot:
        """Return the snapshot once ``self.generation`` differs from ``generation``."""
        while self._generation == generation:
            await self._changed.wait()
        return self._snapshot


def _same(a: Snapshot, b: Snapshot) -> bool:
    return all(a.version(t) == b.version(t) for t in TYPE_ORDER)
