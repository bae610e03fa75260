"""(b, c) Snapshot builds: the pure full build of many models' endpoints with the
pre-push consistency check, and the per-model memo's one-model rebuild."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from convergence_stack import MAX_MS, QUIET_MS, ms, summary

from caravan.discovery.types import Replica, ReplicaSet
from caravan.local.process import free_port
from caravan.spec import PlatformSpec, parse_spec
from caravan.xds.builder import SnapshotBuilder, build_snapshot
from caravan.xds.snapshot import check_consistency


def big_spec(models: int, consul: str = "127.0.0.1:8500") -> PlatformSpec:
    return parse_spec({
        "models": [{"name": f"m{i}", "engine": {"model": f"org/m{i}"}} for i in range(models)],
        "envoy": {"listen_port": free_port(), "admin_port": free_port()},
        "control_plane": {"xds_port": free_port(), "admin_port": free_port(),
                          "debounce_quiet_ms": QUIET_MS, "debounce_max_ms": MAX_MS},
        # A generous HTTP timeout: the fake's first answers at 10,000 entries take seconds.
        "consul": {"address": consul, "wait_s": 30, "timeout_s": 30},
    }, "bench-100x100")


def address(model: int, endpoint: int) -> str:
    return f"10.{1 + model // 250}.{model % 250}.{endpoint + 1}"


def big_sets(models: int, endpoints: int) -> dict[str, ReplicaSet]:
    return {f"m{m}": ReplicaSet.of(f"m{m}", [
        Replica(f"m{m}-{e}", f"m{m}", address(m, e), 8001, metrics_port=8002)
        for e in range(endpoints)]) for m in range(models)}


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def builds(models: int, endpoints: int, repeats: int, tick: Callable[[], None]) -> dict[str, Any]:
    spec, sets = big_spec(models), big_sets(models, endpoints)
    full, check = [], []
    for _ in range(repeats):
        snap = build_snapshot(spec, sets)
        full.append(ms(timed(lambda: build_snapshot(spec, sets))))
        check.append(ms(timed(lambda s=snap: check_consistency(s))))  # type: ignore[misc]
        tick()
    builder = SnapshotBuilder()
    builder.build(spec, sets)
    one, one_checked, rebuilt = [], [], set()
    for k in range(repeats * 4):
        name = f"m{k % models}"
        grown = [*sets[name].replicas, Replica(f"{name}-x{k}", name, "10.200.0.1", 9000 + k)]
        sets[name] = ReplicaSet.of(name, grown)
        t = timed(lambda: builder.build(spec, sets))
        rebuilt.add(builder.rebuilt)
        one.append(ms(t))
        snap = builder.build(spec, sets)  # memo hit: same snapshot, to time the check alone
        one_checked.append(ms(t + timed(lambda s=snap: check_consistency(s))))  # type: ignore[misc]
    return {"models": models, "endpoints_per_model": endpoints,
            "full_build_ms": summary(full), "consistency_check_ms": summary(check),
            "one_model_rebuild_ms": summary(one),
            "one_model_rebuild_plus_check_ms": summary(one_checked),
            "models_rebuilt_per_change": sorted(rebuilt)}
