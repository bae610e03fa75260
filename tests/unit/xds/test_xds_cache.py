"""SnapshotCache: no-op on unchanged snapshots, listeners and waiters on changes."""

from __future__ import annotations

import asyncio

from xds_unit_helpers import make_spec, replica, sets

from caravan.xds.builder import build_snapshot
from caravan.xds.cache import SnapshotCache
from caravan.xds.snapshot import Snapshot

SPEC = make_spec()


def test_unchanged_snapshot_is_a_noop() -> None:
    async def scenario() -> None:
        cache = SnapshotCache()
        seen: list[Snapshot] = []
        cache.add_listener(seen.append)
        assert not cache.ready
        assert cache.set_snapshot(build_snapshot(SPEC, {}))
        assert cache.ready and cache.generation == 1
        assert not cache.set_snapshot(build_snapshot(SPEC, {}))
        assert cache.generation == 1 and len(seen) == 1
        assert cache.set_snapshot(build_snapshot(SPEC, sets(alpha=[replica("a")])))
        assert cache.generation == 2 and len(seen) == 2

    asyncio.run(scenario())


def test_waiters_wake_on_change_only() -> None:
    async def scenario() -> None:
        cache = SnapshotCache()
        cache.set_snapshot(build_snapshot(SPEC, {}))
        waiter = asyncio.create_task(cache.wait_changed(cache.generation))
        await asyncio.sleep(0)
        cache.set_snapshot(build_snapshot(SPEC, {}))
        await asyncio.sleep(0)
        assert not waiter.done()
        new = build_snapshot(SPEC, sets(alpha=[replica("a")]))
        cache.set_snapshot(new)
        assert (await asyncio.wait_for(waiter, 1)).versions == new.versions

    asyncio.run(scenario())


def test_removed_listener_is_not_called() -> None:
    async def scenario() -> None:
        cache = SnapshotCache()
        seen: list[Snapshot] = []
        cache.add_listener(seen.append)
        cache.remove_listener(seen.append)
        cache.set_snapshot(build_snapshot(SPEC, {}))
        assert seen == []

    asyncio.run(scenario())
