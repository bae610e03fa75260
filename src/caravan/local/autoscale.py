"""The autoscaler, in-process, against the local stack (``caravan up --autoscale``).

Same policies, strategies and handler as production; only the adapters differ:
``PrometheusMetricsSource`` on the local Prometheus, ``FleetScaleTarget`` over the
stack's ``ReplicaFleet`` methods (start replicas / drain the newest ones).

Policy durations (evaluation interval, cooldowns, stabilization, query windows) are
multiplied by ``time_scale`` like every simulated duration, so a 300 s stabilization
window at time scale 0.2 lasts 60 s of wall time.
"""

from __future__ import annotations

import asyncio

from caravan.autoscaler.fleet import FleetScaleTarget
from caravan.autoscaler.handler import build_autoscaler
from caravan.autoscaler.prometheus import PrometheusMetricsSource
from caravan.local.supervisor import LocalStack
from caravan.spec import ModelSpec, PlatformSpec
from caravan.spec.autoscaling import policy_for

POLICY_TIMES = ("evaluation_interval_s", "cooldown_up_s", "cooldown_down_s", "scale_down_stabilization_s")
MIN_INTERVAL_S = 0.5  # Prometheus scrapes every 1 s locally; faster ticks see nothing new


def time_scaled(spec: PlatformSpec, factor: float) -> PlatformSpec:
    """``spec`` with every autoscaling duration multiplied by ``factor`` (pure)."""
    return spec.model_copy(update={"models": [_scaled_model(m, factor) for m in spec.models]})


def _scaled_model(m: ModelSpec, factor: float) -> ModelSpec:
    policy = policy_for(m)
    if policy is None or m.autoscaling is None:
        return m
    times = {key: getattr(policy, key) * factor for key in POLICY_TIMES}
    times["evaluation_interval_s"] = max(MIN_INTERVAL_S, times["evaluation_interval_s"])
    checks = tuple(
        c.model_copy(update={"query_window_s": max(MIN_INTERVAL_S, c.query_window_s * factor)})
        for c in policy.checks
    )
    return m.model_copy(update={"autoscaling": m.autoscaling.model_copy(
        update={**times, "checks": checks})})


async def run_local_autoscaler(stack: LocalStack, stop: asyncio.Event, time_scale: float | None = None) -> None:
    """Evaluate every model's policy against the local stack until ``stop`` is set.
    ``time_scale`` defaults to the stack's. Raises RuntimeError without Prometheus."""
    url = stack.prometheus_url
    if url is None:
        raise RuntimeError("the local autoscaler needs Prometheus (apt-get install -y prometheus)")
    factor = stack.options.time_scale if time_scale is None else time_scale
    scaler = build_autoscaler(time_scaled(stack.spec, factor), PrometheusMetricsSource(url),
                              FleetScaleTarget(stack))
    await scaler.run(stop)
