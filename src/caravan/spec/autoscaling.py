"""A model's ``autoscaling:`` section, typed, and the policy it resolves to.

``AutoscalingSpec`` is the section as written; fields left out take the model's values
(``min``/``max`` from ``replicas``, ``job``/``group`` from ``caravan.spec.names``) or
``cooldown_down_s`` (``cooldown_up_s``, as nomad-autoscaler's ``cooldown_on_scale_up``).
``policy_for`` resolves it into a ``ScalingPolicy`` for one model. Checks name their
strategy as a discriminated union (``caravan.spec.strategy_params``).

Durations are seconds (``_s`` suffix). Query templates may use the placeholders
``{model}``, ``{job}``, ``{group}``, ``{cluster}`` (the Envoy cluster,
``model-<name>``) and ``{window}`` (the check's ``query_window_s`` as a PromQL
duration in ms, e.g. ``60000ms``); any other ``{word}`` is an error, since PromQL
itself never uses a bare ``{word}``. Everything here is pure and thread-safe.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from caravan.spec import names
from caravan.spec.base import Frozen
from caravan.spec.strategy_params import ScalingStrategy

if TYPE_CHECKING:
    from caravan.spec.models import ModelSpec

PLACEHOLDERS = ("model", "job", "group", "cluster", "window")
_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

_IN_FLIGHT = (
    'sum(envoy_cluster_upstream_rq_active{envoy_cluster_name="{cluster}"})'
    ' + sum(envoy_cluster_upstream_rq_pending_active{envoy_cluster_name="{cluster}"})'
)


def _vllm_rate(metric: str) -> str:
    """sum of rate(metric) over 5 min for the model, under Triton's ``model`` label
    (Triton's vLLM backend) or vLLM's own ``model_name`` label (vLLM engine, the simulator)."""
    return (
        f'sum(rate({metric}{{model="{{model}}"}}[5m])'
        f' or rate({metric}{{model_name="{{model}}"}}[5m]))'
    )


def _p95(bucket: str) -> str:
    """p95 over 1 min of a vLLM histogram (either label convention); 0 without traffic."""
    return (
        "(histogram_quantile(0.95, sum by (le) "
        f'(rate({bucket}{{model="{{model}}"}}[1m]) or rate({bucket}{{model_name="{{model}}"}}[1m])))'
        " >= 0) or vector(0)"
    )


# Little's law: requests the model must serve at once = arrival rate (Envoy, over the
# check's window) x mean service time (vLLM: e2e - TTFT per request over 5 min, i.e.
# time spent generating, not waiting). A backlog raises neither factor, so it is not
# read as steady demand. Without completed requests yet, falls back to in-flight.
_DEMAND = (
    '(sum(rate(envoy_cluster_upstream_rq_total{envoy_cluster_name="{cluster}"}[{window}]))'
    " * ((" + _vllm_rate("vllm:e2e_request_latency_seconds_sum")
    + " - " + _vllm_rate("vllm:time_to_first_token_seconds_sum")
    + ") / (" + _vllm_rate("vllm:e2e_request_latency_seconds_count") + " > 0)))"
    " or (" + _IN_FLIGHT + ")"
)

# Built-in signals: PromQL templates for metrics that exist in production.
SIGNALS: dict[str, str] = {
    # Concurrency demand by Little's law (see _DEMAND): the default sizing signal.
    "llm_demand": _DEMAND,
    # In-flight requests at Envoy (active + queued), summed over the model's cluster.
    # Triton's vLLM backend exports no waiting-queue gauge, so queue depth comes from
    # Envoy. Includes any backlog: after a load step it over-states steady demand.
    "envoy_in_flight": _IN_FLIGHT,
    # Triton's own pending-request gauge, summed over replicas (near 0 for vLLM; other backends).
    "triton_pending": 'sum(nv_inference_pending_request_count{model="{model}"})',
    # p95 time to first token (seconds) over 1 minute; 0 when there was no traffic.
    "vllm_ttft_p95": _p95("vllm:time_to_first_token_seconds_bucket"),
    # p95 end-to-end request latency (seconds) over 1 minute; 0 when there was no traffic.
    "vllm_e2e_p95": _p95("vllm:e2e_request_latency_seconds_bucket"),
}

DEFAULT_TARGET_IN_FLIGHT = 16.0
OnError = Literal["fail", "ignore", "block_down"]
MAX_POINTS = 11_000  # Prometheus refuses a range query with more points per series


class ScalingCheck(Frozen):
    """One signal and what to do about it. Exactly one of ``query`` / ``signal``.

    Each evaluation queries the check as a range: every ``query_step_s`` over the last
    ``query_window_s`` (nomad-autoscaler's ``query_window``, queried at a 1 s step by
    its Prometheus plugin), and the strategy sees those points. ``on_error`` None
    inherits the policy's ``on_check_error``. Checks sharing a ``group`` are tiers of
    one signal: only the members that want an action count.
    """

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    query: str | None = None
    signal: str | None = None
    query_window_s: float = Field(60.0, gt=0)
    query_step_s: float = Field(1.0, gt=0)
    strategy: ScalingStrategy
    on_error: OnError | None = None
    group: str | None = Field(None, description="tiers of one signal (threshold bands)")

    @field_validator("signal")
    @classmethod
    def _known_signal(cls, v: str | None) -> str | None:
        if v is not None and v not in SIGNALS:
            raise ValueError(f"unknown signal {v!r}; expected one of {sorted(SIGNALS)}")
        return v

    @field_validator("query")
    @classmethod
    def _placeholders(cls, v: str | None) -> str | None:
        errors = [] if v is None else placeholder_errors(v)
        if errors:
            raise ValueError("\n".join(errors))
        return v

    @model_validator(mode="after")
    def _one_source(self) -> ScalingCheck:
        if (self.query is None) == (self.signal is None):
            raise ValueError(
                "query: give exactly one of 'query' (PromQL) or 'signal' "
                f"(one of {sorted(SIGNALS)})"
            )
        if self.query_window_s / self.query_step_s > MAX_POINTS:
            raise ValueError(
                f"query_step_s: {self.query_window_s:g} s / {self.query_step_s:g} s is more than "
                f"Prometheus' {MAX_POINTS} points per range query; raise the step"
            )
        return self

    @property
    def template(self) -> str:
        """The PromQL template: the query, or the built-in signal's."""
        return self.query if self.query is not None else SIGNALS[str(self.signal)]


def default_checks(target_in_flight: float = DEFAULT_TARGET_IN_FLIGHT) -> tuple[ScalingCheck, ...]:
    """The checks used when a policy lists none: concurrency demand (Little's law,
    signal ``llm_demand``) per replica, arrivals averaged over 60 s. The signal is a
    rate over that window already, so one sample above the band is a real rise
    (``burst_samples`` 1)."""
    return (ScalingCheck.model_validate({
        "name": "demand",
        "signal": "llm_demand",
        "query_window_s": 60.0,
        "strategy": {"name": "requests-per-replica",
                     "params": {"target": target_in_flight, "burst_samples": 1}},
    }),)


class _PolicyKnobs(Frozen):
    """What the section and the resolved policy share (see ``ScalingPolicy``)."""

    enabled: bool = True
    evaluation_interval_s: float = Field(10.0, gt=0)
    cooldown_down_s: float = Field(300.0, ge=0)
    scale_down_stabilization_s: float = Field(300.0, ge=0)
    dry_run: bool = False
    on_check_error: OnError = "block_down"
    hold_steps_while_starting: bool = Field(
        True, description="a stepping strategy does not scale up while replicas start"
    )
    capacity_backoff_s: float = Field(
        600.0, ge=0, description="after a scale-up could not be placed, hold scale-ups this long"
    )
    checks: tuple[ScalingCheck, ...] = Field(default_factory=default_checks, min_length=1)


class AutoscalingSpec(_PolicyKnobs):
    """A model's ``autoscaling:`` section as written. None: take the model's value
    (``min``/``max``: ``replicas``; ``job``/``group``: ``names``; ``cooldown_up_s``:
    ``cooldown_down_s``). Bounds and unique check names are checked across fields
    (``caravan.spec.cross_field``), so they are reported alongside every other error."""

    job: str | None = Field(None, min_length=1, description="Nomad job id (default triton-<model>)")
    group: str | None = Field(None, min_length=1, description="Nomad task group (default triton)")
    min: int | None = Field(None, ge=0, description="default: replicas.min")
    max: int | None = Field(None, ge=0, description="default: replicas.max")
    cooldown_up_s: float | None = Field(None, ge=0, description="default: cooldown_down_s")


class ScalingPolicy(_PolicyKnobs):
    """How one model's Nomad job group (or local replicas) is scaled.

    ``min``/``max`` are replica counts; ``cooldown_*_s`` block every action for that
    long after a scale-up / scale-down (nomad-autoscaler's ``cooldown_on_scale_up`` /
    ``cooldown``: 5 min by default, the scale-up one defaulting to the other), and a
    restarted autoscaler resumes the cooldown from the group's last scaling event; a
    scale-down happens only after it was the decision for ``scale_down_stabilization_s``
    without a break. ``on_check_error`` (per check: ``on_error``): ``fail`` - a failed
    check aborts the evaluation (no scaling either way), ``ignore`` - it is left out,
    ``block_down`` (Caravan) - it blocks scale-down only. With
    ``hold_steps_while_starting`` a scale-up won by a stepping strategy
    (``ScalingStrategy.steps_from_count``) waits while replicas are still starting. When
    the target cannot place a scale-up (a full cluster), scale-ups are held at the count
    it placed for ``capacity_backoff_s``; scale-downs are not.
    """

    model: str
    job: str
    group: str
    cluster: str
    min: int = Field(ge=0)
    max: int = Field(ge=0)
    cooldown_up_s: float = Field(ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> ScalingPolicy:
        if self.max < self.min:
            raise ValueError(f"max: must be >= min ({self.min}), got {self.max}")
        return self

    def on_error(self, check: ScalingCheck) -> OnError:
        """The effective error mode of ``check``."""
        return check.on_error or self.on_check_error

    def render(self, check: ScalingCheck) -> str:
        """The check's PromQL with placeholders filled in for this policy's model."""
        values = {
            "model": self.model,
            "job": self.job,
            "group": self.group,
            "cluster": self.cluster,
            "window": f"{max(1, round(check.query_window_s * 1000))}ms",
        }
        text = check.template
        for key, value in values.items():
            text = text.replace("{" + key + "}", value)
        return text


def policy_for(model: ModelSpec) -> ScalingPolicy | None:
    """The model's resolved policy, or None when it has no ``autoscaling`` section.

    Raises pydantic's ValidationError only for a ModelSpec built without its platform's
    cross-field checks (``min`` above ``max``); a loaded spec never does.
    """
    section = model.autoscaling
    if section is None:
        return None
    knobs = {k: getattr(section, k) for k in _PolicyKnobs.model_fields}
    return ScalingPolicy(
        **knobs,
        model=model.name,
        cluster=model.cluster_name,
        job=section.job or model.nomad_job,
        group=section.group or names.NOMAD_GROUP,
        min=model.replicas.min if section.min is None else section.min,
        max=model.replicas.max if section.max is None else section.max,
        cooldown_up_s=section.cooldown_down_s if section.cooldown_up_s is None
        else section.cooldown_up_s,
    )


def placeholder_errors(query: str) -> list[str]:
    """Problems with ``{word}`` placeholders in a query template."""
    if not query.strip():
        return ["must not be empty"]
    bad = sorted({m for m in _PLACEHOLDER_RE.findall(query) if m not in PLACEHOLDERS})
    return [
        f"unknown placeholder {{{b}}}; expected one of "
        + ", ".join("{" + p + "}" for p in PLACEHOLDERS)
        for b in bad
    ]
