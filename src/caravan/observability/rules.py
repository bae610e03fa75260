"""Prometheus recording and alert rules for Caravan, rendered from the platform spec.

Pure: ``recording_groups(spec)`` / ``alert_groups(spec)`` return rule-group dicts
(Prometheus' rule-file schema). Every per-model series carries one label, ``model``:
Triton and its vLLM backend label their series ``model`` already; Envoy's
``envoy_cluster_name="model-<name>"`` is rewritten. Times are in seconds (Prometheus
convention); the spec's SLOs are in milliseconds and converted here.

In-stream failures: with the vLLM backend, Triton counts ``nv_inference_request_success``
when a request is handed to the engine, and engine errors reach the client inside a
gRPC-OK stream, so neither Triton's failure counter nor Envoy's 5xx see them. vLLM
observes ``vllm:e2e_request_latency_seconds`` only for requests that finished well, so
requests handed over minus requests finished (clamped at 0) estimates them; see
docs/observability.md for its bias.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from caravan.spec import ModelSpec, PlatformSpec

# -- names of the series Caravan records (dashboards and alerts read these) ----------
SLO_TTFT = "model:caravan_slo_ttft_seconds:constant"
SLO_E2E = "model:caravan_slo_e2e_seconds:constant"
SLO_ERRORS = "model:caravan_slo_error_ratio:constant"
REPLICAS_MIN = "model:caravan_replicas_min:constant"
REPLICAS_MAX = "model:caravan_replicas_max:constant"

SUCCESS_1M = "model:caravan_request_success:rate1m"
FAILURE_1M = "model:caravan_request_failure:rate1m"
REQUESTS_1M = "model:caravan_requests:rate1m"
ENVOY_REQUESTS_1M = "model:caravan_envoy_requests:rate1m"
SUCCESS_5M = "model:caravan_request_success:rate5m"
FAILURE_5M = "model:caravan_request_failure:rate5m"
ENVOY_5XX_5M = "model:caravan_envoy_5xx:rate5m"
ERRORS_5M = "model:caravan_errors:rate5m"
ERROR_RATIO_5M = "model:caravan_errors:ratio_rate5m"
FINISHED_1M = "model:caravan_engine_finished:rate1m"
FINISHED_5M = "model:caravan_engine_finished:rate5m"
INSTREAM_1M = "model:caravan_instream_failures:rate1m"
INSTREAM_5M = "model:caravan_instream_failures:rate5m"
UNHEALTHY = "model:caravan_replicas_unhealthy:max"
INFLIGHT = "model:caravan_inflight:sum"
HEALTHY = "model:caravan_replicas_healthy:max"
INFLIGHT_PER_REPLICA = "model:caravan_inflight_per_replica:avg"
OUTPUT_TOKENS_1M = "model:caravan_output_tokens:rate1m"
PROMPT_TOKENS_1M = "model:caravan_prompt_tokens:rate1m"
QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
TTFT_Q = {p: f"model:caravan_ttft_seconds:{p}" for p, _ in QUANTILES}
E2E_Q = {p: f"model:caravan_e2e_latency_seconds:{p}" for p, _ in QUANTILES}

CONSTANTS = (SLO_TTFT, SLO_E2E, SLO_ERRORS, REPLICAS_MIN, REPLICAS_MAX)

_ENVOY_MODEL = 'label_replace({inner}, "model", "$1", "envoy_cluster_name", "model-(.+)")'
_MODEL_CLUSTERS = 'envoy_cluster_name=~"model-.+"'
# One zero per spec model, so ``x or ZERO`` never leaves a known model without a series.
_ZERO = f"({SLO_ERRORS} * 0)"


def _rec(name: str, expr: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"record": name, "expr": expr}
    if labels:
        rule["labels"] = labels
    return rule


def _envoy_sum(selector: str, window: str | None, agg: str = "sum") -> str:
    inner = f"rate({selector}[{window}])" if window else selector
    return f"{agg} by (model) ({_ENVOY_MODEL.format(inner=inner)})"


def _rate(metric: str, window: str, by: str = "model") -> str:
    """``sum by (<by>) (rate(<metric>[<window>]))`` for Triton/vLLM series (label ``model``)."""
    return f"sum by ({by}) (rate({metric}[{window}]))"


def spec_constants(model: ModelSpec) -> list[dict[str, Any]]:
    """The spec's per-model SLOs and replica bounds as constant series labelled ``model``."""
    label = {"model": model.name}
    values = (
        (SLO_TTFT, model.slo.ttft_ms / 1000.0),
        (SLO_E2E, model.slo.e2e_ms / 1000.0),
        (SLO_ERRORS, model.slo.error_ratio),
        (REPLICAS_MIN, float(model.replicas.min)),
        (REPLICAS_MAX, float(model.replicas.max)),
    )
    return [_rec(name, f"vector({value:g})", label) for name, value in values]


def traffic_rules() -> list[dict[str, Any]]:
    """Request rates (inference requests at the replicas, and gRPC calls at Envoy), errors.

    Errors are Triton's failures + Envoy 5xx + in-stream failures; the ratio divides them
    by every request tried (Triton's successes already include the in-stream failures).
    """
    xx = f"envoy_cluster_upstream_rq_xx{{{_MODEL_CLUSTERS}}}"
    five = f'envoy_cluster_upstream_rq_xx{{{_MODEL_CLUSTERS},envoy_response_code_class="5"}}'
    tried = f"({FAILURE_5M} or {_ZERO}) + on(model) ({ENVOY_5XX_5M} or {_ZERO})"
    return [
        _rec(SUCCESS_1M, _rate("nv_inference_request_success", "1m")),
        _rec(FAILURE_1M, _rate("nv_inference_request_failure", "1m")),
        _rec(REQUESTS_1M, f"({SUCCESS_1M} or {_ZERO}) + on(model) ({FAILURE_1M} or {_ZERO})"),
        _rec(ENVOY_REQUESTS_1M, _envoy_sum(xx, "1m")),
        _rec(SUCCESS_5M, _rate("nv_inference_request_success", "5m")),
        _rec(FAILURE_5M, _rate("nv_inference_request_failure", "5m")),
        _rec(ENVOY_5XX_5M, _envoy_sum(five, "5m")),
        *instream_rules(),
        _rec(ERRORS_5M, f"{tried} + on(model) ({INSTREAM_5M} or {_ZERO})"),
        _rec(ERROR_RATIO_5M,
             f"{ERRORS_5M} / on(model) ({tried} + on(model) ({SUCCESS_5M} or {_ZERO}))"),
    ]


def instream_rules() -> list[dict[str, Any]]:
    """Requests the engine finished, and in-stream failures: handed over minus finished.

    Defined only where both Triton's success counter and vLLM's e2e histogram exist for a
    model (a missing histogram is a scrape problem, not a 100 % failure rate). 1 m for the
    dashboards; 5 m for the error ratio (its window, and 5x the histogram's 60 s cap).
    """
    e2e = "vllm:e2e_request_latency_seconds_count"
    return [
        _rec(FINISHED_1M, _rate(e2e, "1m")),
        _rec(INSTREAM_1M, f"clamp_min({SUCCESS_1M} - on(model) {FINISHED_1M}, 0)"),
        _rec(FINISHED_5M, _rate(e2e, "5m")),
        _rec(INSTREAM_5M, f"clamp_min({SUCCESS_5M} - on(model) {FINISHED_5M}, 0)"),
    ]


def load_rules() -> list[dict[str, Any]]:
    """In-flight requests (Envoy's active + pending), healthy and unhealthy replicas per model.

    Unhealthy = Envoy's members that are neither healthy, degraded nor excluded (EDS
    DRAINING): failing the active gRPC health check (a dead engine) or outlier-ejected.
    """
    active = f"envoy_cluster_upstream_rq_active{{{_MODEL_CLUSTERS}}}"
    pending = f"envoy_cluster_upstream_rq_pending_active{{{_MODEL_CLUSTERS}}}"
    healthy = f"envoy_cluster_membership_healthy{{{_MODEL_CLUSTERS}}}"
    others = " - ".join(f"envoy_cluster_membership_{kind}{{{_MODEL_CLUSTERS}}}"
                        for kind in ("total", "healthy", "degraded", "excluded"))
    return [
        _rec(INFLIGHT, _envoy_sum(f"{active} + {pending}", None)),
        # Every Envoy sees the same membership: max, not sum, across Envoy instances.
        _rec(HEALTHY, _envoy_sum(healthy, None, agg="max")),
        _rec(UNHEALTHY, _envoy_sum(others, None, agg="max")),
        _rec(INFLIGHT_PER_REPLICA, f"{INFLIGHT} / on(model) clamp_min({HEALTHY}, 1)"),
    ]


def latency_rules() -> list[dict[str, Any]]:
    """p50/p95/p99 TTFT and end-to-end latency (seconds, 5 m windows), tokens/s."""
    rules: list[dict[str, Any]] = []
    for metric, names in (("vllm:time_to_first_token_seconds_bucket", TTFT_Q),
                          ("vllm:e2e_request_latency_seconds_bucket", E2E_Q)):
        buckets = _rate(metric, "5m", by="model, le")
        rules += [_rec(names[p], f"histogram_quantile({q}, {buckets})") for p, q in QUANTILES]
    rules.append(_rec(OUTPUT_TOKENS_1M, _rate("vllm:generation_tokens_total", "1m")))
    rules.append(_rec(PROMPT_TOKENS_1M, _rate("vllm:prompt_tokens_total", "1m")))
    return rules


def recording_groups(spec: PlatformSpec) -> list[dict[str, Any]]:
    """Rule groups for ``prometheus/rules/caravan-recording.yml``."""
    constants = [rule for m in spec.models for rule in spec_constants(m)]
    return [
        {"name": "caravan-spec", "rules": constants},
        {"name": "caravan-model", "rules": traffic_rules() + load_rules() + latency_rules()},
    ]


def recorded_names(spec: PlatformSpec) -> frozenset[str]:
    """Every series name the recording rules produce."""
    return frozenset(r["record"] for g in recording_groups(spec) for r in g["rules"])


@dataclass(frozen=True)
class Alert:
    """One alert rule. ``summary``/``description`` are ``str.format`` templates over
    the alert's labels (``{model}``), rendered to Go templates for Prometheus and to
    plain text for promtool's expected annotations."""

    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    labels: tuple[str, ...]  # the labels the expression's result carries

    def rule(self) -> dict[str, Any]:
        go = {label: "{{ $labels.%s }}" % label for label in self.labels}  # noqa: UP031
        return {
            "alert": self.name, "expr": self.expr, "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {"summary": self.summary.format(**go),
                            "description": self.description.format(**go)},
        }

    def expected(self, **labels: str) -> dict[str, Any]:
        """promtool's ``exp_alerts`` entry for an alert with these labels."""
        return {
            "exp_labels": {**labels, "severity": self.severity},
            "exp_annotations": {"summary": self.summary.format(**labels),
                                "description": self.description.format(**labels)},
        }
