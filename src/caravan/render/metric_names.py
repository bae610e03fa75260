"""Every metric name Caravan's monitoring may query, in one place.

Rendered Prometheus rules and Grafana panels may only name metrics listed here
(plus ``_bucket``/``_sum``/``_count`` of histograms, and the recording rules Caravan
renders itself). A test enforces it, so a renamed metric breaks the build instead
of a dashboard. Pure data; safe to import anywhere.
"""

from __future__ import annotations

# Triton Inference Server (port 8002 /metrics); labels model, version (gpu_uuid for GPU).
TRITON: frozenset[str] = frozenset({
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_pending_request_count",
    "nv_gpu_utilization",
    "nv_gpu_memory_used_bytes",
    "nv_gpu_memory_total_bytes",
})

# vLLM engine metrics. Triton's vLLM backend labels them model, version; vLLM's own
# server labels them model_name. Rules normalise both to ``model``.
VLLM: frozenset[str] = frozenset({
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:time_to_first_token_seconds",
    "vllm:time_per_output_token_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
})

# Envoy admin /stats/prometheus; label envoy_cluster_name ("model-<name>" per model).
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
    "envoy_cluster_membership_total",
    "envoy_cluster_outlier_detection_ejections_active",
    "envoy_server_live",
})

# Caravan's control plane (prometheus_client, /metrics on the xDS admin port).
CONTROL_PLANE: frozenset[str] = frozenset({
    "caravan_xds_pushes_total",
    "caravan_xds_nacks_total",
    "caravan_xds_acks_total",
    "caravan_xds_snapshot_builds_total",
    "caravan_xds_source_failures_total",
    "caravan_xds_connected_clients",
    "caravan_xds_snapshot_build_seconds",
    "caravan_discovery_errors_total",
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
})

# Prometheus' own series: per-target ``up``, and ``ALERTS`` for rule states.
PROMETHEUS: frozenset[str] = frozenset({"up", "scrape_duration_seconds", "ALERTS"})

EXPORTED: frozenset[str] = TRITON | VLLM | ENVOY | CONTROL_PLANE | AUTOSCALER | PROMETHEUS

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def is_exported(name: str) -> bool:
    """True when ``name`` is an exported metric or a histogram series of one."""
    if name in EXPORTED:
        return True
    return any(name.endswith(s) and name[: -len(s)] in EXPORTED for s in HISTOGRAM_SUFFIXES)


def unknown_metrics(names: set[str], recorded: frozenset[str] = frozenset()) -> set[str]:
    """The names in ``names`` that are neither exported nor in ``recorded`` (rule outputs)."""
    return {n for n in names if n not in recorded and not is_exported(n)}
