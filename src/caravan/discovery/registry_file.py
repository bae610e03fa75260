"""The registry file: the replica source of ``caravan up`` (the dev stack), a JSON file
written by its supervisor and watched by the control plane (``caravan xds --registry
FILE``); ``FileReplicaSource`` is the ``ReplicaSource`` over it (Consul's in production).

The file is replaced atomically (write to a temp file, then rename), so a reader
never sees a half-written registry. Format::

    {"replicas": [{"id": "llama-0", "model": "llama", "address": "127.0.0.1",
                   "port": 9100, "metrics_port": 9300, "health": "HEALTHY"}]}
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

from caravan.atomic_file import atomic_write_text
from caravan.discovery.types import HealthStatus, Replica, ReplicaSet

log = logging.getLogger(__name__)


def replica_to_json(r: Replica) -> dict[str, Any]:
    return {
        "id": r.id, "model": r.model, "address": r.address, "port": r.port,
        "weight": r.weight, "zone": r.zone, "health": r.health.value,
        "metrics_port": r.metrics_port,
    }


def replica_from_json(d: dict[str, Any]) -> Replica:
    """Parse one registry entry. Raises ValueError naming the bad field."""
    try:
        port = int(d["port"])
        if not 0 < port < 65536:
            raise ValueError(f"port: must be 1-65535, got {port}")
        return Replica(
            id=str(d["id"]), model=str(d["model"]), address=str(d["address"]), port=port,
            weight=int(d.get("weight", 1)), zone=str(d.get("zone", "")),
            health=HealthStatus(d.get("health", "HEALTHY")),
            metrics_port=None if d.get("metrics_port") is None else int(d["metrics_port"]),
        )
    except KeyError as exc:
        raise ValueError(f"missing field {exc.args[0]!r}") from None


def registry_text(replicas: Iterable[Replica]) -> str:
    """The registry file's content for ``replicas`` (sorted, so equal sets give equal text)."""
    return json.dumps({"replicas": [replica_to_json(r) for r in sorted(replicas)]}, indent=1)


def write_registry(path: Path, replicas: Iterable[Replica]) -> None:
    """Atomically replace the registry file with ``replicas``. Raises OSError (the old
    file is then unchanged); the supervisor writes through ``RetryingWriter`` instead."""
    atomic_write_text(path, registry_text(replicas))


def read_registry(path: Path) -> list[Replica]:
    """Every valid entry of the registry; a missing file is an empty registry.
    Invalid entries are logged and skipped."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    out: list[Replica] = []
    for i, entry in enumerate(data.get("replicas", [])):
        try:
            out.append(replica_from_json(entry))
        except (ValueError, TypeError) as exc:
            log.warning("registry entry skipped", extra={"index": i, "reason": str(exc)})
    return out


class FileReplicaSource:
    """``ReplicaSource`` over a registry file, polled every ``poll_s`` seconds (mtime + size).

    Async-safe for one consumer per ``updates`` call.
    """

    def __init__(self, path: Path, poll_s: float = 0.05) -> None:
        self._path = path
        self._poll_s = poll_s

    async def updates(self, models: Sequence[str]) -> AsyncIterator[ReplicaSet]:
        last: dict[str, ReplicaSet] = {}
        stamp: tuple[int, int] | None = None
        first = True
        while True:
            new_stamp = self._stamp()
            if first or new_stamp != stamp:
                stamp = new_stamp
                sets = self._sets(models)
                if sets is None:  # unreadable: keep the last sets
                    await asyncio.sleep(self._poll_s)
                    continue
                for model in models:
                    if first or sets[model] != last.get(model):
                        yield sets[model]
                last, first = sets, False
            await asyncio.sleep(self._poll_s)

    def _stamp(self) -> tuple[int, int]:
        try:
            st = self._path.stat()
        except FileNotFoundError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_size)

    def _sets(self, models: Sequence[str]) -> dict[str, ReplicaSet] | None:
        try:
            replicas = read_registry(self._path)
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("registry unreadable; keeping last replica sets", extra={"reason": str(exc)})
            return None
        return {m: ReplicaSet.of(m, [r for r in replicas if r.model == m]) for m in models}
