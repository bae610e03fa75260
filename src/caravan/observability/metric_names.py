"""Every metric name Caravan emits or queries, in one place.

Rendered Prometheus rules and Grafana panels, the autoscaler's signals and its
replica-count query may only name metrics listed here (plus ``_bucket``/``_sum``/
``_count`` of histograms, and the recording rules Caravan renders itself), and every
metric Caravan's own emitters register (control plane, discovery, autoscaler, the
replica's vLLM families) must be listed: tests/unit/observability enforces both, so a
renamed metric breaks the build instead of a dashboard. Pure data; safe to import
anywhere.
"""

from __future__ import annotations

# Prometheus scrape job names (the ``job`` label), in the production and local configs.
JOB_TRITON = "triton"
JOB_ENVOY = "envoy"
JOB_XDS = "caravan-xds"
JOB_AUTOSCALER = "caravan-autoscaler"

# Triton Inference Server 2.51 (port 8002 /metrics); labels model, version (gpu_uuid for
# GPU gauges; nv_inference_request_failure also has reason=OTHER|BACKEND|CANCELED|REJECTED).
# With the vLLM backend (a decoupled Python model), ``nv_inference_request_success`` counts a
# request when ``execute()`` hands it to the engine, not when it finishes.
TRITON: frozenset[str] = frozenset({
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
    "nv_inference_pending_request_count",
    "nv_cpu_utilization",
    "nv_cpu_memory_total_bytes",
    "nv_cpu_memory_used_bytes",
    "nv_gpu_utilization",
    "nv_gpu_memory_used_bytes",
    "nv_gpu_memory_total_bytes",
})

# The eight families Triton's vLLM backend exports (vllm_backend src/utils/metrics.py),
# labelled model, version like Triton's own. No running/waiting/KV-cache gauges and no
# queue-time histogram exist there. ``vllm:e2e_request_latency_seconds`` is observed only
# for requests that finished successfully.
VLLM: frozenset[str] = frozenset({
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:time_to_first_token_seconds",
    "vllm:time_per_output_token_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:request_prompt_tokens",
    "vllm:request_generation_tokens",
    "vllm:request_params_n",
})

# A Caravan addition (caravan.triton.vllm_metrics, model parameter
# REPORT_PREFIX_CACHE_METRICS): vLLM's own prefix-cache pair, in tokens, labelled model,
# version. The Triton vLLM backend does not export it (docs/triton-contract.md C37).
VLLM_PREFIX_CACHE: frozenset[str] = frozenset({
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
})

# Finite bucket bounds (seconds) of the vLLM backend's latency histograms. Above the last
# bound everything lands in +Inf, and histogram_quantile then answers the last bound: a
# quantile (and so an SLO alert) can never read higher.
VLLM_BUCKETS: dict[str, tuple[float, ...]] = {
    "vllm:time_to_first_token_seconds": (
        0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
        10.0),
    "vllm:time_per_output_token_seconds": (
        0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5),
    "vllm:e2e_request_latency_seconds": (
        1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0),
}

# Envoy admin /stats/prometheus; label envoy_cluster_name ("model-<name>" per model).
# membership_total = healthy + degraded + excluded (EDS DRAINING) + failing health checks
# or ejected by outlier detection (checked on Envoy 1.40).
ENVOY: frozenset[str] = frozenset({
    "envoy_cluster_upstream_rq_active",
    "envoy_cluster_upstream_rq_pending_active",
    "envoy_cluster_upstream_rq_total",
    "envoy_cluster_upstream_rq_completed",
    "envoy_cluster_upstream_rq_xx",
    "envoy_cluster_upstream_rq_time",
    "envoy_cluster_upstream_rq_retry",
    "envoy_cluster_upstream_rq_pending_overflow",
    "envoy_cluster_membership_healthy",
    "envoy_cluster_membership_degraded",
    "envoy_cluster_membership_excluded",
    "envoy_cluster_membership_total",
    "envoy_cluster_outlier_detection_ejections_active",
    "envoy_server_live",
})

# Caravan's control plane (prometheus_client, /metrics on the xDS admin port).
CONTROL_PLANE: frozenset[str] = frozenset({
    "caravan_xds_pushes_total",
    "caravan_xds_nacks_total",
    "caravan_xds_unverified_nacks_total",
    "caravan_xds_refused_streams_total",
    "caravan_xds_acks_total",
    "caravan_xds_snapshot_builds_total",
    "caravan_xds_source_failures_total",
    "caravan_xds_connected_clients",
    "caravan_xds_snapshot_build_seconds",
    "caravan_discovery_errors_total",
    "caravan_discovery_failures_total",
    "caravan_discovery_up",
    "caravan_discovery_empty_updates_held_total",
    "caravan_discovery_skipped_entries_total",
})

# Caravan's autoscaler (prometheus_client, /metrics).
AUTOSCALER: frozenset[str] = frozenset({
    "caravan_autoscaler_current_count",
    "caravan_autoscaler_desired_count",
    "caravan_autoscaler_check_value",
    "caravan_autoscaler_decisions_total",
    "caravan_autoscaler_check_vote",
    "caravan_autoscaler_last_decision",
    "caravan_autoscaler_last_decision_timestamp_seconds",
    "caravan_autoscaler_capacity_exhausted",
})

# Prometheus' own series: per-target ``up``, and ``ALERTS`` for rule states.
PROMETHEUS: frozenset[str] = frozenset({"up", "scrape_duration_seconds", "ALERTS"})

EXPORTED: frozenset[str] = TRITON | VLLM | VLLM_PREFIX_CACHE | ENVOY | CONTROL_PLANE | AUTOSCALER | PROMETHEUS

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def is_exported(name: str) -> bool:
    """True when ``name`` is an exported metric or a histogram series of one."""
    if name in EXPORTED:
        return True
    return any(name.endswith(s) and name[: -len(s)] in EXPORTED for s in HISTOGRAM_SUFFIXES)


def unknown_metrics(names: set[str], recorded: frozenset[str] = frozenset()) -> set[str]:
    """The names in ``names`` that are neither exported nor in ``recorded`` (rule outputs)."""
    return {n for n in names if n not in recorded and not is_exported(n)}
