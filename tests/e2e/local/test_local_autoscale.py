"""Local autoscaling end to end: real Prometheus, Envoy, control plane and replicas.

A bounded load step makes the model scale up; the new replicas join Envoy's cluster
and receive traffic; when the load drops, the model scales down after the
stabilization window, draining first, with zero failed requests throughout.

The load runs in short back-to-back chunks until a condition holds (all replicas
serving in Envoy's cluster; the scale-in decided), then one more chunk, each phase
bounded by a generous limit: how long a scale-up takes depends on the machine (on a
loaded 2-core box the decision comes ~4.5 s into the step and two new tritonservers
need ~8 s to load, so a fixed 12 s step could end before they joined).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from caravan.autoscaler.fleet import FleetScaleTarget
from caravan.autoscaler.handler import build_autoscaler
from caravan.autoscaler.prometheus import PrometheusMetricsSource
from caravan.bench import arrivals, dataset, runner
from caravan.bench.results import SweepResult
from caravan.bench.stats import RequestRecord
from caravan.bench.triton import Target
from caravan.local.autoscale import run_local_autoscaler, time_scaled
from caravan.local.launch import serving_hosts
from caravan.local.supervisor import LocalPorts, LocalStack, StackOptions
from caravan.spec import parse_spec
from caravan.spec.names import cluster_name

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


def test_policy_durations_follow_time_scale() -> None:
    scaled = time_scaled(parse_spec(SPEC), 0.5).models[0].autoscaling
    assert scaled is not None
    assert scaled.scale_down_stabilization_s == 2
    assert scaled.evaluation_interval_s == 0.5
    assert scaled.checks[0].query_window_s == 1


CHUNK_S = 3.0  # one load chunk; conditions are checked between chunks
STEP_LIMIT_S = 90.0  # bound of the load step (scale-up and join take ~8 s quiet, ~13 s loaded)
CALM_LIMIT_S = 60.0  # bound of the light load until the scale-in is decided


async def load_until(stack: LocalStack, concurrency: int, done: Callable[[], bool],
                     limit_s: float) -> tuple[list[RequestRecord], list[RequestRecord]]:
    """Closed-loop load in ``CHUNK_S`` chunks until ``done()`` holds after a chunk, then
    one more chunk: (every record, the last chunk's records). AssertionError naming
    ``limit_s`` when ``done()`` still fails after that long."""
    loop = asyncio.get_running_loop()
    start, records = loop.time(), list[RequestRecord]()
    while not await asyncio.to_thread(done):
        if loop.time() - start > limit_s:
            raise AssertionError(f"condition not met within {limit_s}s of load")
        records += (await load(stack, concurrency, CHUNK_S, 2000)).levels[0].records
    last = list((await load(stack, concurrency, CHUNK_S, 2000)).levels[0].records)
    return records + last, last


def test_load_step_scales_up_then_drains_down_without_errors(tmp_path: Path) -> None:
    options = StackOptions(time_scale=0.02, prometheus=True, drain_grace_s=1.0)

    def joined(stack: LocalStack) -> bool:
        return len(serving_hosts(stack.ports.envoy_admin, cluster_name("m"))) == 3

    async def scenario(stack: LocalStack) -> tuple[list[RequestRecord], list[RequestRecord], list[RequestRecord]]:
        stop = asyncio.Event()
        scaler = asyncio.create_task(run_local_autoscaler(stack, stop, time_scale=1.0))
        try:
            # in-flight ~16 / target 4 -> 3 replicas; the last chunk runs with all 3 in Envoy
            step, after_join = await load_until(stack, 16, lambda: joined(stack), STEP_LIMIT_S)
            assert stack.counts("m") == (3, 0)
            # light load during the scale-in; its last chunk spans the drain of the 2 replicas
            calm, _ = await load_until(stack, 1, lambda: stack.counts("m") == (1, 0), CALM_LIMIT_S)
            return step, after_join, calm
        finally:
            stop.set()
            await scaler

    with LocalStack(parse_spec(SPEC), tmp_path, LocalPorts.free(), options) as stack:
        assert stack.counts("m") == (1, 0)
        assert stack.prometheus_url is not None
        # the stack returns once Prometheus has scraped Envoy: the first evaluation sees the signal
        first = build_autoscaler(time_scaled(stack.spec, 1.0), PrometheusMetricsSource(stack.prometheus_url),
                                 FleetScaleTarget(stack)).once()[0]
        assert [c.vote.error for c in first.checks] == [None], first.reason
        step, after_join, calm = asyncio.run(scenario(stack))
    records = step + calm
    assert records and all(r.ok for r in records), {r.status for r in records if not r.ok}
    served_by = {r.replica_id for r in after_join}
    assert len(served_by) == 3, served_by  # the new replicas joined Envoy's cluster and got traffic
