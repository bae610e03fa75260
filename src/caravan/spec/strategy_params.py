"""A scaling check's strategy: its name and typed parameters, as a discriminated union.

``strategy: {name: requests-per-replica, params: {target: 8}}`` validates to a
``RequestsPerReplica`` whose ``params`` is a ``RequestsPerReplicaParams``; an unknown
``name`` is reported at ``strategy.name``, a bad parameter at ``strategy.params.<field>``.
``params`` may be left out when the strategy needs none. The strategies themselves
(pure functions) live in ``caravan.autoscaler.strategies``; their semantics are
documented there. Pure data, frozen, thread-safe.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, model_validator

from caravan.spec.base import Frozen


class _Limits(Frozen):
    max_scale_up: int | None = Field(None, ge=1, description="most replicas added in one action")
    max_scale_down: int | None = Field(
        None, ge=1, description="most replicas removed in one action"
    )


class TargetValueParams(_Limits):
    target: float = Field(ge=0)
    threshold: float = Field(0.01, ge=0)


class ThresholdParams(Frozen):
    upper_bound: float | None = None
    lower_bound: float | None = None
    delta: int | None = None
    percentage: float | None = None
    value: int | None = Field(None, ge=0)
    within_bounds_trigger: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _one_action(self) -> ThresholdParams:
        if self.upper_bound is None and self.lower_bound is None:
            raise ValueError("upper_bound: give upper_bound, lower_bound or both")
        actions = [a for a in ("delta", "percentage", "value") if getattr(self, a) is not None]
        if len(actions) != 1:
            raise ValueError(
                f"delta: give exactly one of delta, percentage or value (got {actions})"
            )
        return self


class FixedValueParams(Frozen):
    value: int = Field(ge=0)


class PassThroughParams(_Limits):
    pass


class RequestsPerReplicaParams(_Limits):
    target: float = Field(gt=0, description="in-flight requests one replica should carry")
    tolerance: float = Field(0.1, ge=0, lt=1)
    burst_samples: int = Field(2, ge=1, description="scale-up looks at the mean of the last N")


class LatencySloParams(Frozen):
    slo_s: float = Field(gt=0, description="latency objective, seconds")
    down_ratio: float = Field(0.5, gt=0, lt=1)
    step_up: int = Field(1, ge=1)
    step_down: int = Field(1, ge=1)


class _Strategy(Frozen):
    """``params`` left out means ``{}`` (errors then name each required parameter)."""

    @model_validator(mode="before")
    @classmethod
    def _params_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("params") is None:
            return {**data, "params": {}}
        return data

    @property
    def steps_from_count(self) -> bool:
        """True when the strategy computes its scale-up relative to the current count
        (``target-value``: ceil(count x factor); ``threshold`` with ``delta`` or
        ``percentage``; ``latency-slo``: count + step_up). Sizing strategies
        (``requests-per-replica``, ``fixed-value``, ``pass-through``, ``threshold`` with
        ``value``) compute it from the signal alone."""
        return False


class TargetValue(_Strategy):
    name: Literal["target-value"]
    params: TargetValueParams

    @property
    def steps_from_count(self) -> bool:
        return True


class Threshold(_Strategy):
    name: Literal["threshold"]
    params: ThresholdParams

    @property
    def steps_from_count(self) -> bool:
        return self.params.value is None


class FixedValue(_Strategy):
    name: Literal["fixed-value"]
    params: FixedValueParams


class PassThrough(_Strategy):
    name: Literal["pass-through"]
    params: PassThroughParams = PassThroughParams()


class RequestsPerReplica(_Strategy):
    name: Literal["requests-per-replica"]
    params: RequestsPerReplicaParams


class LatencySlo(_Strategy):
    name: Literal["latency-slo"]
    params: LatencySloParams

    @property
    def steps_from_count(self) -> bool:
        return True


ScalingStrategy = Annotated[
    TargetValue | Threshold | FixedValue | PassThrough | RequestsPerReplica | LatencySlo,
    Field(discriminator="name"),
]
STRATEGY_NAMES = ("target-value", "threshold", "fixed-value", "pass-through",
                  "requests-per-replica", "latency-slo")

_ADAPTER: TypeAdapter[ScalingStrategy] = TypeAdapter(ScalingStrategy)


def parse_strategy(data: Any) -> ScalingStrategy:
    """A strategy from ``{"name": ..., "params": {...}}``; pydantic ValidationError if bad
    (``caravan.spec.base.format_errors(exc, data)`` gives its ``path: message`` lines)."""
    return _ADAPTER.validate_python(data)
