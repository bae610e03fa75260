"""The vLLM backend's eight metric families, registered through Triton's Python-backend
metrics API, so they appear on tritonserver's own metrics port beside ``nv_*``.

Source: triton-inference-server/vllm_backend ``src/utils/metrics.py`` (``TritonMetrics``):
counters ``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``; histograms
``vllm:time_to_first_token_seconds``, ``vllm:time_per_output_token_seconds``,
``vllm:e2e_request_latency_seconds``, ``vllm:request_prompt_tokens``,
``vllm:request_generation_tokens``, ``vllm:request_params_n``; labels ``model`` and
``version``; the bucket edges below. No engine gauges (the backend exports none).

When they move (C36): like vLLM's ``VllmStatLogger.record``, per engine output of a
request (``caravan.triton.generation.Progress``): the prompt tokens and TTFT with its
first output, the generated tokens with every output, counters only by non-zero
amounts; e2e, ``request_prompt_tokens``, ``request_generation_tokens`` and
``request_params_n`` when it finishes. Simplification: vLLM observes one inter-token
latency per token; the simulator's outputs are coalesced (``stream_interval_ms``), so
TPOT is observed once per output, with the output's mean inter-token time. Times are
real seconds.

Caravan addition, off unless asked for (``prefix_cache=True``, the model's
``REPORT_PREFIX_CACHE_METRICS`` parameter): vLLM's own Prometheus logger exports the
prefix-cache pair ``vllm:prefix_cache_queries_total`` / ``vllm:prefix_cache_hits_total``
(vllm ``vllm/v1/metrics/loggers.py``, ``PrometheusStatLogger``: counters
``vllm:prefix_cache_queries`` and ``vllm:prefix_cache_hits``, to which prometheus_client
appends ``_total``; fed from ``PrefixCacheStats``, in tokens: queries += a request's
prompt tokens, hits += its cached tokens, when it is scheduled), but the Triton vLLM
backend does not (docs/triton-contract.md C37), so a stock Triton replica has no hit
rate. Caravan's replica records them with the request's first output, same names,
HELP and labels as vLLM's, counters only by non-zero amounts.

``pb_utils`` is injected (the module inside the stub; a fake in unit tests). Not
thread-safe: one thread (the model's outbox) calls ``observe``.
"""

from __future__ import annotations

from typing import Any

from caravan.triton.generation import Progress

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
E2E_BUCKETS = (1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)
N_BUCKETS = (1, 2, 5, 10, 20)

_COUNTERS = (
    ("prompt", "vllm:prompt_tokens_total", "Number of prefill tokens processed."),
    ("generation", "vllm:generation_tokens_total", "Number of generation tokens processed."),
)
_HISTOGRAMS = (
    ("ttft", "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds."),
    ("tpot", "vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds."),
    ("e2e", "vllm:e2e_request_latency_seconds", "Histogram of end to end request latency in seconds."),
    ("req_prompt", "vllm:request_prompt_tokens", "Number of prefill tokens processed."),
    ("req_generation", "vllm:request_generation_tokens", "Number of generation tokens processed."),
    ("n", "vllm:request_params_n", "Histogram of the n request parameter."),
)
FAMILY_NAMES = tuple(name for _, name, _ in _COUNTERS + _HISTOGRAMS)
_PREFIX_COUNTERS = (
    ("prefix_queries", "vllm:prefix_cache_queries_total",
     "Prefix cache queries, in terms of number of queried tokens."),
    ("prefix_hits", "vllm:prefix_cache_hits_total", "Prefix cache hits, in terms of number of cached tokens."),
)
PREFIX_CACHE_FAMILY_NAMES = tuple(name for _, name, _ in _PREFIX_COUNTERS)  # the Caravan addition


def build_1_2_5_buckets(max_value: int) -> tuple[int, ...]:
    """1, 2, 5, 10, 20, 50, ... up to ``max_value`` (vLLM's ``build_1_2_5_buckets``)."""
    out: list[int] = []
    exponent = 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10**exponent
            if value > max_value:
                return tuple(out)
            out.append(value)
        exponent += 1


class VllmMetrics:
    """The families and this model's labelled metrics (plus the prefix-cache pair when
    ``prefix_cache``)."""

    def __init__(self, pb_utils: Any, model: str, version: str, max_model_len: int,
                 prefix_cache: bool = False) -> None:
        labels = {"model": model, "version": version}
        token_buckets = build_1_2_5_buckets(max_model_len)
        buckets = {"ttft": TTFT_BUCKETS, "tpot": TPOT_BUCKETS, "e2e": E2E_BUCKETS,
                   "req_prompt": token_buckets, "req_generation": token_buckets, "n": N_BUCKETS}
        self._families: list[Any] = []
        self._m: dict[str, Any] = {}
        fam_cls = pb_utils.MetricFamily
        for key, name, doc in _COUNTERS + (_PREFIX_COUNTERS if prefix_cache else ()):
            fam = fam_cls(name=name, description=doc, kind=fam_cls.COUNTER)
            self._families.append(fam)
            self._m[key] = fam.Metric(labels=labels)
        for key, name, doc in _HISTOGRAMS:
            fam = fam_cls(name=name, description=doc, kind=fam_cls.HISTOGRAM)
            self._families.append(fam)
            self._m[key] = fam.Metric(labels=labels, buckets=list(buckets[key]))

    def observe(self, stats: Progress) -> None:
        """Record one engine output of a request."""
        m = self._m
        if stats.prompt_tokens:
            m["prompt"].increment(stats.prompt_tokens)
        if stats.prompt_tokens and "prefix_queries" in m:
            m["prefix_queries"].increment(stats.prompt_tokens)
            if stats.cached_tokens:
                m["prefix_hits"].increment(stats.cached_tokens)
        if stats.new_tokens:
            m["generation"].increment(stats.new_tokens)
        if stats.ttft_s is not None:
            m["ttft"].observe(stats.ttft_s)
        if stats.itl_s is not None:
            m["tpot"].observe(stats.itl_s)
        done = stats.finished
        if done is not None:
            m["e2e"].observe(done.e2e_s)
            m["req_prompt"].observe(done.prompt_tokens)
            m["req_generation"].observe(done.output_tokens)
            m["n"].observe(1)
