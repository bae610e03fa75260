"""Scaling policies: the ``autoscaling:`` section of a model in the platform spec.

The spec keeps that section as a raw dict (``ModelSpec.autoscaling``); this module
owns its schema. ``validate_policy`` reports every problem at once with paths
relative to the section (``checks[0].strategy.params.target: must be > 0``);
``policy_for`` turns a validated model into a frozen ``ScalingPolicy``.

Durations are seconds (``_s`` suffix). Query templates may use the placeholders
``{model}``, ``{job}``, ``{group}``, ``{cluster}`` (the Envoy cluster,
``model-<name>``) and ``{window}`` (the check's ``query_window_s`` as a PromQL
duration in ms, e.g. ``60000ms``); any other ``{word}`` is an error, since PromQL
itself never uses a bare ``{word}``. Everything here is pure and thread-safe.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from caravan.autoscaler.strategies import PARAMS, params_errors

if TYPE_CHECKING:
    from caravan.spec import ModelSpec

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


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StrategySpec(_Frozen):
    """A strategy name (see ``strategies.PARAMS``) and its raw parameters."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


OnError = Literal["fail", "ignore", "block_down"]
MAX_POINTS = 11_000  # Prometheus refuses a range query with more points per series


class Check(_Frozen):
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
    strategy: StrategySpec
    on_error: OnError | None = None
    group: str | None = Field(None, description="tiers of one signal (threshold bands)")

    @model_validator(mode="after")
    def _one_source(self) -> Check:
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


class ScalingPolicy(_Frozen):
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
    (``strategies.steps_from_count``) waits while replicas are still starting. When the
    target cannot place a scale-up (a full cluster), scale-ups are held at the count it
    placed for ``capacity_backoff_s``; scale-downs are not.
    """

    model: str
    job: str
    group: str
    cluster: str
    enabled: bool = True
    min: int = Field(ge=0)
    max: int = Field(ge=0)
    evaluation_interval_s: float = Field(10.0, gt=0)
    cooldown_up_s: float = Field(300.0, ge=0, description="default: cooldown_down_s")
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
    checks: tuple[Check, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _bounds(self) -> ScalingPolicy:
        if self.max < self.min:
            raise ValueError(f"max: must be >= min ({self.min}), got {self.max}")
        return self

    def on_error(self, check: Check) -> OnError:
        """The effective error mode of ``check``."""
        return check.on_error or self.on_check_error

    def render(self, check: Check) -> str:
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


def default_checks(target_in_flight: float = DEFAULT_TARGET_IN_FLIGHT) -> list[dict[str, Any]]:
    """The checks used when a policy lists none: concurrency demand (Little's law,
    signal ``llm_demand``) per replica, arrivals averaged over 60 s. The signal is a
    rate over that window already, so one sample above the band is a real rise
    (``burst_samples`` 1)."""
    params = {"target": target_in_flight, "burst_samples": 1}
    return [
        {
            "name": "demand",
            "signal": "llm_demand",
            "query_window_s": 60.0,
            "strategy": {"name": "requests-per-replica", "params": params},
        }
    ]


def default_job_group(model: ModelSpec) -> tuple[str, str]:
    """Nomad (job id, task group) of a model, as rendered: ``triton-<name>``, ``triton``."""
    return f"triton-{model.name}", "triton"


def _resolved(raw: dict[str, Any], model: ModelSpec) -> dict[str, Any]:
    job, group = default_job_group(model)
    data: dict[str, Any] = {
        "job": job,
        "group": group,
        "min": model.replicas.min,
        "max": model.replicas.max,
        "checks": default_checks(),
    }
    data.update(raw)
    down = raw.get("cooldown_down_s")
    if "cooldown_up_s" not in raw and isinstance(down, int | float) and down >= 0:
        data["cooldown_up_s"] = down  # nomad-autoscaler: cooldown_on_scale_up = cooldown
    data.update(model=model.name, cluster=model.cluster_name)
    return data


def validate_policy(raw: dict[str, Any], model: ModelSpec) -> list[str]:
    """Every problem in a model's ``autoscaling`` section, as ``path: message`` lines.

    Paths are relative to the section (``checks[0].strategy.params.target: must be > 0``).
    An empty list means ``policy_for(model)`` will succeed.
    """
    if not isinstance(raw, dict):
        return [f"<section>: expected a mapping, got {type(raw).__name__}"]
    errors = [
        e
        for e in (
            f"{k}: is derived from the model and cannot be set"
            for k in ("model", "cluster")
            if k in raw
        )
    ]
    data = _resolved({k: v for k, v in raw.items() if k not in ("model", "cluster")}, model)
    try:
        ScalingPolicy.model_validate(data)
    except ValidationError as exc:
        errors += _format(exc)
    errors += _raw_check_errors(data.get("checks"))
    errors += [e for e in _cross_errors(data) if e not in errors]
    return errors


def policy_for(model: ModelSpec) -> ScalingPolicy | None:
    """The model's policy, or None when it has no ``autoscaling`` section.

    Raises ValueError listing every problem if the section is invalid (``load_spec``
    has normally rejected such a spec already).
    """
    if model.autoscaling is None:
        return None
    errors = validate_policy(model.autoscaling, model)
    if errors:
        raise ValueError(f"models[{model.name}].autoscaling: " + "; ".join(errors))
    return ScalingPolicy.model_validate(_resolved(model.autoscaling, model))


def _cross_errors(data: dict[str, Any]) -> list[str]:
    """min <= max and unique check names, checked on raw data so they show up with others."""
    errors: list[str] = []
    lo, hi = data.get("min"), data.get("max")
    if isinstance(lo, int) and isinstance(hi, int) and hi < lo:
        errors.append(f"max: must be >= min ({lo}), got {hi}")
    checks = data.get("checks")
    names = (
        [c.get("name") for c in checks if isinstance(c, dict)] if isinstance(checks, list) else []
    )
    for i, name in enumerate(names):
        if name is not None and name in names[:i]:
            errors.append(f"checks[{i}].name: duplicate check name {name!r}")
    return errors


def _raw_check_errors(checks: Any) -> list[str]:
    """Signal, placeholder and strategy errors of each check (on raw data)."""
    errors: list[str] = []
    for i, check in enumerate(checks if isinstance(checks, list) else []):
        if isinstance(check, dict):
            errors.extend(_one_check_errors(i, check))
    return errors


def _one_check_errors(i: int, check: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    signal = check.get("signal")
    if isinstance(signal, str) and signal not in SIGNALS:
        errors.append(
            f"checks[{i}].signal: unknown signal {signal!r}; expected one of {sorted(SIGNALS)}"
        )
    query = check.get("query")
    if isinstance(query, str):
        errors.extend(f"checks[{i}].query: {e}" for e in placeholder_errors(query))
    strategy = check.get("strategy")
    if isinstance(strategy, dict) and isinstance(strategy.get("name"), str):
        name, params = strategy["name"], strategy.get("params") or {}
        if name not in PARAMS:
            errors.append(
                f"checks[{i}].strategy.name: unknown strategy {name!r}; "
                f"expected one of {sorted(PARAMS)}"
            )
        elif isinstance(params, dict):
            errors.extend(f"checks[{i}].strategy.params.{e}" for e in params_errors(name, params))
    return errors


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


_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than_equal": "must be <= {le}",
    "missing": "required field is missing",
    "extra_forbidden": "unknown field",
    "string_too_short": "must not be empty",
    "too_short": "must have at least {min_length} item(s)",
    "literal_error": "must be one of {expected}",
}


def _format(exc: ValidationError) -> list[str]:
    """pydantic errors -> ``path: message`` lines (params are checked separately)."""
    out: list[str] = []
    for err in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        if ".params." in f".{loc}.":
            continue
        template = _MESSAGES.get(err["type"])
        ctx = err.get("ctx") or {}
        msg = template.format(**ctx) if template else str(err["msg"]).removeprefix("Value error, ")
        if err["type"] not in ("missing", "extra_forbidden"):
            msg += f" (got {err['input']!r})" if not isinstance(err["input"], dict) else ""
        head, sep, rest = msg.partition(": ")
        if sep and re.fullmatch(r"[a-z_]+", head):
            loc, msg = (f"{loc}.{head}" if loc else head), rest
        out.append(f"{loc}: {msg}" if loc else msg)
    return out
