"""The stock Nomad Autoscaler's ``policy {}`` for a model's ``scaling`` block. Pure.

Built from the model's Caravan policy (``caravan.spec.autoscaling``), so both
autoscalers run the same checks: the same PromQL (placeholders filled in) from the APM
plugin named ``prometheus`` over the same ``query_window``, with the same bounds,
interval and cooldowns. Strategies map to nomad-autoscaler's built-in plugins
(``plugins/builtin/strategy``):

* ``target-value``, ``threshold``, ``fixed-value``, ``pass-through``: the same plugin and
  parameters.
* ``requests-per-replica`` (Caravan) -> ``target-value`` on the query divided by the
  replicas Envoy sees healthy (``envoy_cluster_membership_healthy``): target-value
  scales to ``ceil(count * value / target)`` with ``count`` = Nomad's running
  replicas, i.e. ``ceil(demand / target)``; ``tolerance`` becomes its ``threshold``.
  It reads the latest point, where Caravan's strategy reads the window mean.
* ``latency-slo`` (Caravan) -> two ``threshold`` checks in one group: ``<name>-up``
  (``delta`` = step_up once any point is above the SLO) and ``<name>-down`` (``delta`` =
  -step_down once every point of the window is below ``slo * down_ratio``).

``on_check_error``/``on_error``: ``fail`` and ``ignore`` as they are; Caravan's
``block_down`` (a broken check blocks scale-down only) has no counterpart and becomes
``fail`` (the broken check blocks the evaluation). Capacity awareness (``capacity``
decisions, releasing an unplaceable scale-up) and counting starting replicas as capacity
exist only in Caravan's autoscaler.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel

from caravan.nomad.jobmodel import AutoscalerCheck, AutoscalerPolicy, Number
from caravan.spec import ModelSpec
from caravan.spec.autoscaling import ScalingCheck, ScalingPolicy, policy_for
from caravan.spec.strategy_params import LatencySlo, RequestsPerReplica

APM_SOURCE = "prometheus"  # the apm block's name in the Nomad Autoscaler's agent config


def autoscaler_policy(model: ModelSpec) -> AutoscalerPolicy | None:
    """The Nomad Autoscaler policy of ``model``, or None when it has no enabled
    ``autoscaling`` section."""
    policy = policy_for(model)
    if policy is None or not policy.enabled:
        return None
    checks = tuple(c for check in policy.checks for c in _checks(policy, check))
    return AutoscalerPolicy(
        evaluation_interval_s=_seconds(policy.evaluation_interval_s),
        cooldown_s=_seconds(policy.cooldown_down_s),
        cooldown_on_scale_up_s=_seconds(policy.cooldown_up_s),
        on_check_error=_on_error(policy.on_check_error) or "fail",
        checks=checks,
    )


def _seconds(value: float) -> int:
    return max(1, math.ceil(value))


def _on_error(mode: str | None) -> str | None:
    return None if mode is None else ("fail" if mode == "block_down" else mode)


def _numbers(params: dict[str, Any]) -> tuple[tuple[str, Number], ...]:
    """The numeric parameters; a whole float is written as an integer (``16``, not ``16.0``)."""
    return tuple((k, int(v) if isinstance(v, float) and v.is_integer() else v)
                 for k, v in params.items() if isinstance(v, int | float))


def _given(params: BaseModel) -> dict[str, Any]:
    """The parameters the spec sets (defaults are the plugin's own), in declaration order."""
    return params.model_dump(exclude_unset=True)


def _checks(policy: ScalingPolicy, check: ScalingCheck) -> tuple[AutoscalerCheck, ...]:
    query, strategy = policy.render(check), check.strategy
    common: dict[str, Any] = {"query_window_s": _seconds(check.query_window_s),
                              "source": APM_SOURCE, "on_error": _on_error(check.on_error)}
    if isinstance(strategy, RequestsPerReplica):
        per_replica = (f"({query}) / clamp_min(sum(envoy_cluster_membership_healthy"
                       f'{{envoy_cluster_name="{policy.cluster}"}}), 1)')
        p = strategy.params
        tv: dict[str, Any] = {"target": p.target, "threshold": p.tolerance}
        tv.update({k: v for k, v in _given(p).items() if k in ("max_scale_up", "max_scale_down")})
        return (AutoscalerCheck(check.name, per_replica, strategy="target-value",
                                params=_numbers(tv), group=check.group, **common),)
    if isinstance(strategy, LatencySlo):
        return _latency_slo(check, query, strategy, common)
    return (AutoscalerCheck(check.name, query, strategy=strategy.name,
                            params=_numbers(_given(strategy.params)), group=check.group,
                            **common),)


def _latency_slo(check: ScalingCheck, query: str, strategy: LatencySlo,
                 common: dict[str, Any]) -> tuple[AutoscalerCheck, ...]:
    p = strategy.params
    points = max(1, math.floor(check.query_window_s))  # a 1 s step: one point per second
    group = check.group or check.name
    up = {"lower_bound": p.slo_s, "delta": p.step_up, "within_bounds_trigger": 1}
    down = {"upper_bound": p.slo_s * p.down_ratio, "delta": -p.step_down,
            "within_bounds_trigger": points}
    return (
        AutoscalerCheck(f"{check.name}-up", query, strategy="threshold", params=_numbers(up),
                        group=group, **common),
        AutoscalerCheck(f"{check.name}-down", query, strategy="threshold",
                        params=_numbers(down), group=group, **common),
    )
