"""Caravan's alert rules (``prometheus/rules/caravan-alerts.yml``), pure.

Thresholds come from the spec through the constant series of ``rules.spec_constants``
(``model.slo``, ``model.replicas``), so one rule serves every model. Windows: latency
and errors over 5 m (held 5 m), NACKs over 5 m, an unhealthy replica held 30 s,
pinned-at-max held 15 m, flapping over 30 m, failing discovery held 2 m. See docs/observability.md for each alert's
meaning. A restarted replica (dead engine, crash) fires for the 10 m after its restart.
"""

from __future__ import annotations

from typing import Any

from caravan.observability.metric_names import JOB_TRITON
from caravan.observability.rules import (
    E2E_Q,
    ERROR_RATIO_5M,
    HEALTHY,
    REPLICAS_MAX,
    REPLICAS_MIN,
    SLO_E2E,
    SLO_ERRORS,
    SLO_TTFT,
    TTFT_Q,
    UNHEALTHY,
    Alert,
)

DESIRED = "caravan_autoscaler_desired_count"
NACKS = "caravan_xds_nacks_total"

TTFT_ABOVE_SLO = Alert(
    name="CaravanTTFTAboveSLO",
    expr=f"{TTFT_Q['p95']} > on(model) {SLO_TTFT}",
    for_="5m", severity="warning", labels=("model",),
    summary="p95 time to first token of {model} is above its SLO",
    description="p95 TTFT of {model} over 5m has exceeded slo.ttft_ms for 5m: "
                "add replicas or check in-flight requests per replica.",
)

E2E_ABOVE_SLO = Alert(
    name="CaravanE2ELatencyAboveSLO",
    expr=f"{E2E_Q['p95']} > on(model) {SLO_E2E}",
    for_="5m", severity="warning", labels=("model",),
    summary="p95 end-to-end latency of {model} is above its SLO",
    description="p95 request latency of {model} over 5m has exceeded slo.e2e_ms for 5m.",
)

ERROR_RATIO_HIGH = Alert(
    name="CaravanErrorRatioHigh",
    expr=f"{ERROR_RATIO_5M} > on(model) {SLO_ERRORS}",
    for_="5m", severity="critical", labels=("model",),
    summary="{model} fails more requests than its SLO allows",
    description="Failed inference requests of {model} (Triton failures, Envoy 5xx, and "
                "in-stream failures: requests handed to the engine that did not finish) "
                "over 5m have exceeded slo.error_ratio for 5m.",
)

NO_HEALTHY_REPLICAS = Alert(
    name="CaravanNoHealthyReplicas",
    expr=(f"({REPLICAS_MIN} > 0 or on(model) max by (model) ({DESIRED}) > 0)"
          f" unless on(model) ({HEALTHY} > 0)"),
    for_="1m", severity="critical", labels=("model",),
    summary="{model} has no healthy replica in Envoy",
    description="Envoy reports no healthy endpoint for model-{model} (or reports nothing) "
                "while the spec or the autoscaler wants replicas: requests fail with 503.",
)

# An endpoint Envoy's own health check or outlier detection rejects while Consul still
# lists it. (A dead vLLM engine is not this: Triton's gRPC health is SERVING again once
# the unload is done; the model-ready check in Consul drops it, see REPLICA_RESTARTED.)
REPLICA_UNHEALTHY = Alert(
    name="CaravanReplicaUnhealthy",
    expr=f"{UNHEALTHY} > 0",
    for_="30s", severity="warning", labels=("model",),
    summary="A replica of {model} fails Envoy's health check",
    description="Envoy has kept a replica of model-{model} that it finds unhealthy for 30s "
                "(gRPC health NOT_SERVING, unreachable, or ejected as an outlier), while "
                "Consul still lists it: Nomad will not restart it. Check the replica's "
                "Consul checks and restart the allocation.",
)

# A replica restarted in place: Triton's request counter for its model fell back (same
# target, same labels). A dead vLLM engine ends this way: the backend unloads the model,
# the model-ready check goes critical, Consul drops the replica and Nomad's check_restart
# (locally: caravan up's supervisor) restarts the task. A crash or an OOM kill does too.
# A drained or rescheduled replica does not (its series ends, or comes back under a new
# target), nor a replica that never served a request.
TRITON_SUCCESS = f'nv_inference_request_success{{job="{JOB_TRITON}"}}'
REPLICA_RESTARTED = Alert(
    name="CaravanReplicaRestarted",
    expr=f"sum by (model) (resets({TRITON_SUCCESS}[10m])) > 0",
    for_="0m", severity="warning", labels=("model",),
    summary="A replica of {model} restarted in place in the last 10m",
    description="Triton's request counter of a {model} replica was reset in the last 10m: "
                "the replica restarted in place, after a dead vLLM engine (model-ready "
                "check), a crash or an OOM kill. Check the allocation's events and the "
                "replica's log.",
)

XDS_NACK = Alert(
    name="CaravanXdsNack",
    expr=(f"(sum by (type) (increase({NACKS}[5m])) > 0)"
          f" or (sum by (type) ({NACKS}) > 0 unless sum by (type) ({NACKS} offset 5m))"),
    for_="0m", severity="warning", labels=("type",),
    summary="Envoy rejected (NACKed) {type} config from the control plane",
    description="An Envoy NACKed {type} in the last 5m; it keeps its previous config. "
                "See the control plane's log for the error_detail.",
)

AUTOSCALER_PINNED_AT_MAX = Alert(
    name="CaravanAutoscalerPinnedAtMax",
    expr=f"max by (model) ({DESIRED}) >= on(model) {REPLICAS_MAX}",
    for_="15m", severity="warning", labels=("model",),
    summary="The autoscaler has wanted the maximum replicas of {model} for 15m",
    description="{model} is at replicas.max and may need more: raise replicas.max "
                "or add capacity.",
)

DISCOVERY_UP = "caravan_discovery_up"
DISCOVERY_FAILING = Alert(
    name="CaravanDiscoveryFailing",
    expr=f"min by (instance, model) ({DISCOVERY_UP}) == 0",
    for_="2m", severity="warning", labels=("instance", "model"),
    summary="Replica discovery of {model} is failing on control plane {instance}",
    description="The control plane at {instance} has had no usable answer from Consul for "
                "{model} for 2m; it keeps serving the last replica set, so new, removed or "
                "failed replicas are not seen. caravan_discovery_failures_total{{kind}} says "
                "why (unreachable, leaderless, rate_limited, acl_filtered, acl_empty, "
                "acl_denied, config); its /readyz and log give Consul's text and the fix.",
)

_CHANGES = f"max by (model) (changes({DESIRED}[30m]))"
_RANGE = f"max by (model) (max_over_time({DESIRED}[30m]) - min_over_time({DESIRED}[30m]))"
REPLICA_COUNT_FLAPPING = Alert(
    name="CaravanReplicaCountFlapping",
    expr=f"({_CHANGES} >= 4) and on(model) ({_CHANGES} >= 2 * {_RANGE})",
    for_="0m", severity="warning", labels=("model",),
    summary="The desired replica count of {model} is flapping",
    description="The desired count of {model} changed at least 4 times in 30m, back and "
                "forth over a narrow range: lengthen cooldowns or widen the strategy's "
                "threshold.",
)

ALERTS: tuple[Alert, ...] = (
    TTFT_ABOVE_SLO, E2E_ABOVE_SLO, ERROR_RATIO_HIGH, NO_HEALTHY_REPLICAS,
    REPLICA_UNHEALTHY, REPLICA_RESTARTED, XDS_NACK, AUTOSCALER_PINNED_AT_MAX, REPLICA_COUNT_FLAPPING,
    DISCOVERY_FAILING,
)


def alert_groups() -> list[dict[str, Any]]:
    """Rule groups for ``prometheus/rules/caravan-alerts.yml`` (independent of the spec;
    per-model thresholds live in the recording file's constants)."""
    return [{"name": "caravan-alerts", "rules": [a.rule() for a in ALERTS]}]
