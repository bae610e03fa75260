"""caravan.triton.vllm_metrics with a fake pb_utils: the eight vllm: families, their
labels and buckets, and when they move (docs/triton-contract.md C35-C37)."""

from __future__ import annotations

import pytest
from triton_fakes import FakeMetricFamily, FakePbUtils

from caravan.observability import metric_names as names
from caravan.triton.generation import Outcome, Progress
from caravan.triton.vllm_metrics import FAMILY_NAMES, PREFIX_CACHE_FAMILY_NAMES, VllmMetrics, build_1_2_5_buckets

FAMILIES = {
    "vllm:prompt_tokens_total": ("COUNTER", "Number of prefill tokens processed.", None),
    "vllm:generation_tokens_total": ("COUNTER", "Number of generation tokens processed.", None),
    "vllm:time_to_first_token_seconds": ("HISTOGRAM", "Histogram of time to first token in seconds.",
                                         [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                                          2.5, 5.0, 7.5, 10.0]),
    "vllm:time_per_output_token_seconds": ("HISTOGRAM", "Histogram of time per output token in seconds.",
                                           [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
                                            2.5]),
    "vllm:e2e_request_latency_seconds": ("HISTOGRAM", "Histogram of end to end request latency in seconds.",
                                         [1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0]),
    "vllm:request_prompt_tokens": ("HISTOGRAM", "Number of prefill tokens processed.",
                                   [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]),
    "vllm:request_generation_tokens": ("HISTOGRAM", "Number of generation tokens processed.",
                                       [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]),
    "vllm:request_params_n": ("HISTOGRAM", "Histogram of the n request parameter.", [1, 2, 5, 10, 20]),
}


@pytest.fixture
def metrics() -> tuple[VllmMetrics, dict[str, FakeMetricFamily]]:
    pb = FakePbUtils()
    m = VllmMetrics(pb, "llama", "1", max_model_len=8192)
    return m, {f.name: f for f in FakeMetricFamily.created}


@pytest.mark.parametrize(("max_value", "want"), [
    (1, (1,)),
    (4, (1, 2)),
    (100, (1, 2, 5, 10, 20, 50, 100)),
    (4096, (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)),
    (8192, (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)),
], ids=["1", "4", "100", "4096", "8192"])
def test_build_1_2_5_buckets(max_value: int, want: tuple[int, ...]) -> None:
    assert build_1_2_5_buckets(max_value) == want


def test_exactly_the_eight_families_with_one_labelled_series(
        metrics: tuple[VllmMetrics, dict[str, FakeMetricFamily]]) -> None:
    _, families = metrics
    assert set(families) == set(FAMILIES) == set(FAMILY_NAMES)
    for name, (kind, doc, buckets) in FAMILIES.items():
        fam = families[name]
        assert (fam.kind, fam.description) == (kind, doc), name
        (metric,) = fam.metrics
        assert metric.labels == {"model": "llama", "version": "1"}
        assert metric.buckets == buckets, name


def _by_name(families: dict[str, FakeMetricFamily]) -> dict[str, tuple[list[float], list[float]]]:
    return {n: (f.metrics[0].increments, f.metrics[0].observations) for n, f in families.items()}


@pytest.mark.parametrize(("progress", "want"), [
    (Progress(prompt_tokens=12, new_tokens=1, ttft_s=0.05),
     {"vllm:prompt_tokens_total": ([12], []), "vllm:generation_tokens_total": ([1], []),
      "vllm:time_to_first_token_seconds": ([], [0.05])}),
    (Progress(new_tokens=4, itl_s=0.02),
     {"vllm:generation_tokens_total": ([4], []), "vllm:time_per_output_token_seconds": ([], [0.02])}),
    (Progress(new_tokens=2, itl_s=0.01, finished=Outcome(12, 30, 0.05, 1.2)),
     {"vllm:generation_tokens_total": ([2], []), "vllm:time_per_output_token_seconds": ([], [0.01]),
      "vllm:e2e_request_latency_seconds": ([], [1.2]), "vllm:request_prompt_tokens": ([], [12]),
      "vllm:request_generation_tokens": ([], [30]), "vllm:request_params_n": ([], [1])}),
    (Progress(), {}),
], ids=["first-output", "later-output", "finishing-output", "nothing"])
def test_observe_one_output(metrics: tuple[VllmMetrics, dict[str, FakeMetricFamily]], progress: Progress,
                            want: dict[str, tuple[list[float], list[float]]]) -> None:
    m, families = metrics
    m.observe(progress)
    got = {n: v for n, v in _by_name(families).items() if v != ([], [])}
    assert got == want


def test_prefix_cache_pair_is_a_caravan_addition_named_as_vllm_names_it() -> None:
    FakeMetricFamily.created.clear()
    m = VllmMetrics(FakePbUtils(), "llama", "1", max_model_len=8192, prefix_cache=True)
    families = {f.name: f for f in FakeMetricFamily.created}
    assert set(families) == set(FAMILIES) | set(PREFIX_CACHE_FAMILY_NAMES)
    assert set(PREFIX_CACHE_FAMILY_NAMES) == names.VLLM_PREFIX_CACHE
    docs = {"vllm:prefix_cache_queries_total": "Prefix cache queries, in terms of number of queried tokens.",
            "vllm:prefix_cache_hits_total": "Prefix cache hits, in terms of number of cached tokens."}
    for name, doc in docs.items():
        fam = families[name]
        assert (fam.kind, fam.description) == ("COUNTER", doc)
        assert fam.metrics[0].labels == {"model": "llama", "version": "1"}
    m.observe(Progress(prompt_tokens=100, cached_tokens=96, new_tokens=1))
    m.observe(Progress(prompt_tokens=20, new_tokens=1))  # a miss: queries only
    m.observe(Progress(new_tokens=3))  # later outputs: nothing
    got = _by_name(families)
    assert got["vllm:prefix_cache_queries_total"] == ([100, 20], [])
    assert got["vllm:prefix_cache_hits_total"] == ([96], [])


def test_counters_never_move_by_zero(metrics: tuple[VllmMetrics, dict[str, FakeMetricFamily]]) -> None:
    m, families = metrics
    m.observe(Progress(prompt_tokens=0, new_tokens=0, finished=Outcome(0, 0, 0.0, 0.0)))
    assert families["vllm:prompt_tokens_total"].metrics[0].increments == []
    assert families["vllm:generation_tokens_total"].metrics[0].increments == []
