"""Conformance of a local replica with the replica contract (docs/triton-contract.md):
the metrics port (the eight vLLM families, the prefix-cache pair, what a request moves).
Assertions work on deltas and poll (the model records metrics on its response thread,
C36); the shared ``replica`` fixture (conftest.py) is not disturbed."""

from __future__ import annotations

import math
import re

import pytest
from triton_conformance import (
    FAILURE,
    MAX_MODEL_LEN,
    MODEL,
    SUCCESS,
    Replica,
    Scrape,
    final_answer,
    infer_request,
    one,
    only_error,
    scrape,
    wait_for,
)

pytestmark = pytest.mark.integration


# -- 7. metrics -----------------------------------------------------------------

FAMILIES = {
    "vllm:prompt_tokens_total": ("counter", "Number of prefill tokens processed."),
    "vllm:generation_tokens_total": ("counter", "Number of generation tokens processed."),
    "vllm:time_to_first_token_seconds": ("histogram", "Histogram of time to first token in seconds."),
    "vllm:time_per_output_token_seconds": ("histogram", "Histogram of time per output token in seconds."),
    "vllm:e2e_request_latency_seconds": ("histogram", "Histogram of end to end request latency in seconds."),
    "vllm:request_prompt_tokens": ("histogram", "Number of prefill tokens processed."),
    "vllm:request_generation_tokens": ("histogram", "Number of generation tokens processed."),
    "vllm:request_params_n": ("histogram", "Histogram of the n request parameter."),
}


TOKEN_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]  # build_1_2_5_buckets(4096)


BUCKETS = {
    "vllm:time_to_first_token_seconds": [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                                         2.5, 5.0, 7.5, 10.0],
    "vllm:time_per_output_token_seconds": [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
                                           2.5],
    "vllm:e2e_request_latency_seconds": [1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0],
    "vllm:request_prompt_tokens": TOKEN_BUCKETS,
    "vllm:request_generation_tokens": TOKEN_BUCKETS,
    "vllm:request_params_n": [1, 2, 5, 10, 20],
}


# Caravan addition (C37): vLLM's own prefix-cache pair, on by default in the rendered
# config (REPORT_PREFIX_CACHE_METRICS); HELP as vllm/v1/metrics/loggers.py.
PREFIX_CACHE_FAMILIES = {
    "vllm:prefix_cache_queries_total": ("counter", "Prefix cache queries, in terms of number of queried tokens."),
    "vllm:prefix_cache_hits_total": ("counter", "Prefix cache hits, in terms of number of cached tokens."),
}


def test_c35_c37_exactly_the_eight_vllm_families_and_the_prefix_cache_pair(replica: Replica) -> None:
    assert MAX_MODEL_LEN == 4096
    s = scrape(replica.plan.metrics_port)
    vllm = {name for name in s.types if name.startswith("vllm:")}
    every = {**FAMILIES, **PREFIX_CACHE_FAMILIES}
    assert vllm == set(every), "C37: nothing else of vLLM is exported (bar Caravan's prefix-cache pair)"
    for n, _, _ in s.samples:
        if n.startswith("vllm:"):
            assert n in every or re.sub(r"_(bucket|count|sum)$", "", n) in every, n
    for name, (kind, doc) in every.items():
        assert (s.types[name], s.help[name]) == (kind, doc), name
        if kind == "counter":
            assert s.series(name) == [{"model": MODEL, "version": "1"}], name
            continue
        for suffix in ("_count", "_sum"):
            assert s.series(name + suffix) == [{"model": MODEL, "version": "1"}], name
        buckets = s.series(name + "_bucket")
        assert all(set(b) == {"model", "version", "le"} and b["model"] == MODEL and b["version"] == "1"
                   for b in buckets), buckets
        edges = [float(b["le"]) for b in buckets]
        assert edges == [*map(float, BUCKETS[name]), math.inf], name


def _metric_deltas(before: Scrape, after: Scrape) -> dict[str, float]:
    names = ("vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:e2e_request_latency_seconds_count",
             "vllm:time_to_first_token_seconds_count", "vllm:request_prompt_tokens_sum",
             "vllm:request_generation_tokens_sum", "vllm:request_params_n_sum", "vllm:request_params_n_count")
    return {n: after.value(n, model=MODEL) - before.value(n, model=MODEL) for n in names}


def test_c36_metrics_move_with_a_request(replica: Replica) -> None:
    before = scrape(replica.plan.metrics_port)
    prompt = "count these five words"
    answers = one(replica.endpoint, infer_request(prompt, sampling={"max_tokens": 7},
                                                  flags={"return_num_input_tokens": True}))
    prompt_tokens = int(final_answer(answers).outputs["num_input_tokens"])
    want = {"vllm:prompt_tokens_total": prompt_tokens, "vllm:generation_tokens_total": 7,
            "vllm:e2e_request_latency_seconds_count": 1, "vllm:time_to_first_token_seconds_count": 1,
            "vllm:request_prompt_tokens_sum": prompt_tokens, "vllm:request_generation_tokens_sum": 7,
            "vllm:request_params_n_sum": 1, "vllm:request_params_n_count": 1}
    wait_for(lambda: _metric_deltas(before, scrape(replica.plan.metrics_port)) == want, "the vllm: metrics",
             timeout_s=5)


def test_c34_refused_requests_are_counted_nowhere(replica: Replica) -> None:
    before = scrape(replica.plan.metrics_port)
    assert only_error(one(replica.endpoint, infer_request(model="nope")))
    assert only_error(one(replica.endpoint, infer_request(None, rid="no-inputs")))
    good = final_answer(one(replica.endpoint, infer_request(sampling={"max_tokens": 1})))
    assert good.error == ""
    wait_for(lambda: scrape(replica.plan.metrics_port).value(SUCCESS, model=MODEL)
             == before.value(SUCCESS, model=MODEL) + 1, "the success counter")
    after = scrape(replica.plan.metrics_port)
    assert after.value(FAILURE, model=MODEL) == before.value(FAILURE, model=MODEL)
    assert not [lab for n, lab, _ in after.samples if n.startswith("nv_inference") and lab.get("model") == "nope"]
