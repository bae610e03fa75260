"""Local autoscaling end to end: real Prometheus, Envoy, control plane and replicas.

A bounded load step makes the model scale up; the new replicas join Envoy's cluster
and receive traffic; when the load drops, the model scales down after the
stabilization window, draining first, with zero failed requests throughout.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from caravan.bench import arrivals, dataset, runner
from caravan.bench.results import SweepResult
from caravan.bench.triton import Target
from caravan.local.autoscale import run_local_autoscaler, time_scaled
from caravan.local.supervisor import LocalPorts, LocalStack, StackOptions
from caravan.spec import parse_spec

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs Debian's prometheus")

POLICY = {
    "evaluation_interval_s": 1, "cooldown_up_s": 2, "cooldown_down_s": 1, "scale_down_stabilization_s": 4,
    "checks": [{"name": "in-flight", "signal": "envoy_in_flight", "query_window_s": 2,
                "strategy": {"name": "requests-per-replica", "params": {"target": 4}}}],
}
SPEC = {"models": [{"name": "m", "engine": {"model": "x"}, "replicas": {"min": 1, "max": 3},
                    "autoscaling": POLICY}]}


async def load(stack: LocalStack, concurrency: int, seconds: float, requests: int) -> SweepResult:
    """Closed-loop load, bounded by ``requests`` and ``seconds`` (whichever comes first)."""
    level = arrivals.LoadLevel(arrivals.Shape.CONCURRENCY, concurrency,
                               arrivals.Limits(requests=requests, duration_s=seconds))
    work = dataset.Workload(seed=1, input=dataset.Lengths(50), output=dataset.Lengths(300))
    return await runner.run_sweep(Target(stack.endpoint, timeout_s=30), "m", [level], work)


async def wait_for(cond: object, timeout_s: float) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < timeout_s:
        if cond():  # type: ignore[operator]
            return loop.time() - start
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {timeout_s}s")


def test_policy_durations_follow_time_scale() -> None:
    scaled = time_scaled(parse_spec(SPEC), 0.5).models[0].autoscaling
    assert scaled is not None
    assert scaled.scale_down_stabilization_s == 2
    assert scaled.evaluation_interval_s == 0.5
    assert scaled.checks[0].query_window_s == 1


def test_load_step_scales_up_then_drains_down_without_errors(tmp_path: Path) -> None:
    options = StackOptions(time_scale=0.02, prometheus=True, drain_grace_s=1.0)

    async def scenario(stack: LocalStack) -> tuple[SweepResult, SweepResult]:
        stop = asyncio.Event()
        scaler = asyncio.create_task(run_local_autoscaler(stack, stop, time_scale=1.0))
        try:
            step = await load(stack, 16, 12.0, 3000)  # in-flight ~16 / target 4 -> 3 replicas
            assert stack.counts("m")[0] + stack.counts("m")[1] == 3
            calm = asyncio.create_task(load(stack, 1, 14.0, 300))  # light load during scale-in
            await wait_for(lambda: stack.counts("m") == (1, 0), 20.0)
            return step, await calm
        finally:
            stop.set()
            await scaler

    with LocalStack(parse_spec(SPEC), tmp_path, LocalPorts.free(), options) as stack:
        assert stack.counts("m") == (1, 0)
        step, calm = asyncio.run(scenario(stack))
    records = step.levels[0].records + calm.levels[0].records
    assert records and all(r.ok for r in records), {r.status for r in records if not r.ok}
    served_by = {r.replica_id for r in step.levels[0].records}
    assert len(served_by) == 3, served_by  # the new replicas joined Envoy's cluster and got traffic
