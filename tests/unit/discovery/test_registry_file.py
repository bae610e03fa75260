"""The local registry file: atomic writes, tolerant reads, change-only updates."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from caravan.discovery.registry_file import (
    FileReplicaSource,
    read_registry,
    replica_from_json,
    write_registry,
)
from caravan.discovery.types import HealthStatus, Replica, ReplicaSet


def rep(i: int, model: str = "m", health: HealthStatus = HealthStatus.HEALTHY) -> Replica:
    return Replica(id=f"{model}-{i}", model=model, address="127.0.0.1", port=9000 + i, health=health)


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    reps = [rep(2), rep(1, health=HealthStatus.DRAINING)]
    write_registry(path, reps)
    assert sorted(read_registry(path)) == sorted(reps)


def test_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_registry(tmp_path / "none.json") == []


BAD = [
    ("port-zero", {"id": "a", "model": "m", "address": "x", "port": 0}, "port: must be 1-65535"),
    ("port-high", {"id": "a", "model": "m", "address": "x", "port": 70000}, "port: must be 1-65535"),
    ("no-model", {"id": "a", "address": "x", "port": 1}, "missing field 'model'"),
    ("bad-health", {"id": "a", "model": "m", "address": "x", "port": 1, "health": "MEH"}, "MEH"),
]


@pytest.mark.parametrize(("entry", "message"), [(e, m) for _, e, m in BAD], ids=[i for i, _, _ in BAD])
def test_bad_entry_is_rejected_with_reason(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replica_from_json(entry)


def test_bad_entries_are_skipped_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text('{"replicas": [{"id": "a", "model": "m", "address": "x", "port": 0},'
                    ' {"id": "b", "model": "m", "address": "127.0.0.1", "port": 9001}]}')
    assert [r.id for r in read_registry(path)] == ["b"]


def test_replica_set_is_sorted_and_serving_excludes_draining() -> None:
    s = ReplicaSet.of("m", [rep(2), rep(1, health=HealthStatus.DRAINING)])
    assert [r.id for r in s.replicas] == ["m-1", "m-2"]
    assert [r.id for r in s.serving] == ["m-2"]


def test_source_yields_initial_then_only_changes(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    write_registry(path, [rep(1, "a")])

    async def scenario() -> list[ReplicaSet]:
        got: list[ReplicaSet] = []
        gen = FileReplicaSource(path, poll_s=0.01).updates(["a", "b"])
        got.append(await gen.__anext__())
        got.append(await gen.__anext__())
        write_registry(path, [rep(1, "a"), rep(1, "b")])  # only b changes
        got.append(await asyncio.wait_for(gen.__anext__(), 2))
        path.write_text("{not json")  # unreadable: last sets kept, nothing yielded
        await asyncio.sleep(0.05)
        write_registry(path, [rep(2, "a"), rep(1, "b")])  # only a changes
        got.append(await asyncio.wait_for(gen.__anext__(), 2))
        await gen.aclose()
        return got

    got = asyncio.run(scenario())
    assert [(s.model, len(s.replicas)) for s in got] == [("a", 1), ("b", 0), ("b", 1), ("a", 1)]
    assert got[3].replicas[0].id == "a-2"
