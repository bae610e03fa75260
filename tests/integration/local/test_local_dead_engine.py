"""A replica whose simulated engine dies, in `caravan up`'s stack with the real tritonserver:
the next request it gets fails in-stream (the vLLM backend's health check unloads the
model), the supervisor sees ModelReady turn false, unregisters the replica (Envoy stops
sending it traffic) and restarts it in place, after which it serves again.
Bounded: at most 200 probe requests, 60 s in all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from caravan.discovery.local import read_registry
from caravan.local.health import infer_once
from caravan.local.supervisor import LocalPorts, LocalStack, StackOptions
from caravan.spec import parse_spec

pytestmark = pytest.mark.integration
MODEL = "alpha"
SPEC = {"models": [{"name": MODEL, "engine": {"model": "a"}, "replicas": {"min": 1, "initial": 2, "max": 2}}]}


def wait_until(cond: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until ``cond()``; AssertionError naming ``what`` after ``timeout_s``."""
    start = time.monotonic()
    while not cond():
        assert time.monotonic() - start < timeout_s, f"no {what} within {timeout_s:.0f}s"
        time.sleep(0.05)
    return time.monotonic() - start


def test_dead_engine_is_unregistered_then_restarted(tmp_path: Path) -> None:
    options = StackOptions(time_scale=0.01, prometheus=False, drain_grace_s=0.5)
    with LocalStack(parse_spec(SPEC), tmp_path, LocalPorts.free(), options) as stack:
        victim = stack.replicas(MODEL)[0]
        plan = next(p for p in stack.replica_plans(MODEL) if p.grpc_port == victim.port)
        plan.fault_file.touch()
        # The backend checks its engine when a request arrives: probe the victim directly.
        wait_until(lambda: not infer_once(victim.endpoint, MODEL, timeout_s=2), 10, "failed request")
        registered = lambda: victim.id in {r.id for r in read_registry(stack.registry_path)}  # noqa: E731
        wait_until(lambda: not registered(), 10, "unregistration")
        # Envoy follows once the control plane has pushed the new endpoints (~0.1-0.5 s).
        wait_until(lambda: all(infer_once(stack.endpoint, MODEL, timeout_s=5) for _ in range(5)), 5,
                   "5 requests in a row served")
        served = [infer_once(stack.endpoint, MODEL, timeout_s=5) for _ in range(20)]
        assert all(served), "Envoy still sent requests to the dead replica"
        plan.fault_file.unlink()  # the restarted engine is healthy (a fresh process)
        wait_until(registered, 40, "restarted replica back in the registry")
        assert infer_once(victim.endpoint, MODEL)
