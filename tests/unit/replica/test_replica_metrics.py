"""The replica's Prometheus exposition: exact names, types and labels."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from caravan.replica.engine import Admitted, Advance, EngineStats
from caravan.replica.metrics import (
    REQUEST_LATENCY_BUCKETS,
    TTFT_BUCKETS,
    ReplicaMetrics,
    TritonCounters,
    render_triton_counters,
)

STATS = EngineStats(
    running=3, waiting=2, kv_used_tokens=500, kv_reserved_tokens=900, kv_capacity_tokens=1000
)


def exposition_lines(m: ReplicaMetrics) -> list[str]:
    return m.exposition().decode().splitlines()


def sample(m: ReplicaMetrics, line_start: str) -> float:
    matches = [ln for ln in exposition_lines(m) if ln.startswith(line_start)]
    assert len(matches) == 1, (line_start, matches)
    return float(matches[0].rsplit(" ", 1)[1])


TYPES = [
    ("nv_inference_request_success", "counter"),
    ("nv_inference_request_failure", "counter"),
    ("nv_inference_count", "counter"),
    ("nv_inference_exec_count", "counter"),
    ("nv_inference_request_duration_us", "counter"),
    ("nv_inference_queue_duration_us", "counter"),
    ("nv_inference_compute_infer_duration_us", "counter"),
    ("nv_inference_pending_request_count", "gauge"),
    ("vllm:num_requests_running", "gauge"),
    ("vllm:num_requests_waiting", "gauge"),
    ("vllm:kv_cache_usage_perc", "gauge"),
    ("vllm:time_to_first_token_seconds", "histogram"),
    ("vllm:time_per_output_token_seconds", "histogram"),
    ("vllm:e2e_request_latency_seconds", "histogram"),
    ("vllm:request_queue_time_seconds", "histogram"),
    ("vllm:prompt_tokens_total", "counter"),
    ("vllm:generation_tokens_total", "counter"),
]


@pytest.mark.parametrize(("name", "kind"), TYPES, ids=[n for n, _ in TYPES])
def test_every_metric_has_its_exact_name_and_type(name: str, kind: str) -> None:
    assert f"# TYPE {name} {kind}" in exposition_lines(ReplicaMetrics("llama", lambda: STATS))


def test_triton_counters_have_no_total_suffix_and_model_version_labels() -> None:
    m = ReplicaMetrics("llama", lambda: STATS)
    m.received()
    m.handed_off(0.002)
    m.succeeded(e2e_s=1.5, ttft_s=0.1, output_tokens=8)
    m.received()
    m.failed(pending=True)
    assert sample(m, 'nv_inference_request_success{model="llama",version="1"}') == 1
    assert sample(m, 'nv_inference_request_failure{model="llama",version="1"}') == 1
    assert sample(m, 'nv_inference_request_duration_us{model="llama",version="1"}') == 1_500_000
    assert sample(m, 'nv_inference_queue_duration_us{model="llama",version="1"}') == 2000
    assert sample(m, 'nv_inference_pending_request_count{model="llama",version="1"}') == 0
    assert not any("nv_inference_count_total" in ln for ln in exposition_lines(m))


def test_engine_gauges_come_from_the_stats_snapshot() -> None:
    m = ReplicaMetrics("llama", lambda: STATS)
    assert sample(m, 'vllm:num_requests_running{model_name="llama"}') == 3
    assert sample(m, 'vllm:num_requests_waiting{model_name="llama"}') == 2
    assert sample(m, 'vllm:kv_cache_usage_perc{model_name="llama"}') == 0.5


def test_engine_advances_feed_token_counters_and_queue_time() -> None:
    m = ReplicaMetrics("llama", lambda: STATS)
    adv = Advance(
        admitted=(Admitted("1", 0.0, 2000.0),), steps=3, prompt_tokens=40, generated_tokens=9
    )
    m.engine_advanced(adv, STATS, ms_to_s=0.01 / 1000)  # time scale 0.01
    assert sample(m, 'vllm:prompt_tokens_total{model_name="llama"}') == 40
    assert sample(m, 'vllm:generation_tokens_total{model_name="llama"}') == 9
    # 2000 simulated ms at scale 0.01 = 0.02 real seconds
    assert sample(m, 'vllm:request_queue_time_seconds_sum{model_name="llama"}') == pytest.approx(
        0.02
    )


def test_histograms_use_vllm_buckets() -> None:
    m = ReplicaMetrics("llama", lambda: STATS)
    m.first_token(0.03)
    lines = exposition_lines(m)
    ttft = [ln for ln in lines if ln.startswith("vllm:time_to_first_token_seconds_bucket")]
    e2e = [ln for ln in lines if ln.startswith("vllm:e2e_request_latency_seconds_bucket")]
    assert len(ttft) == len(TTFT_BUCKETS) + 1 and len(e2e) == len(REQUEST_LATENCY_BUCKETS) + 1
    assert sample(m, 'vllm:time_to_first_token_seconds_bucket{le="0.02",model_name="llama"}') == 0
    assert sample(m, 'vllm:time_to_first_token_seconds_bucket{le="0.04",model_name="llama"}') == 1


def test_exposition_parses_as_prometheus_text() -> None:
    m = ReplicaMetrics('we"ird', lambda: STATS)
    families = {f.name: f.type for f in text_string_to_metric_families(m.exposition().decode())}
    assert families["nv_inference_count"] == "counter"
    assert families["vllm:generation_tokens"] == "counter"
    assert families["vllm:e2e_request_latency_seconds"] == "histogram"


def test_label_values_are_escaped() -> None:
    text = render_triton_counters('a"b\\c', TritonCounters())
    assert 'model="a\\"b\\\\c"' in text
