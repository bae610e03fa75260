"""Prometheus metrics of one replica, in its own ``CollectorRegistry`` (never the
global one), served on ``--metrics-port`` at ``/metrics``.

Triton (labels ``model``, ``version``), printed under Triton's exact names and types
(``# TYPE nv_inference_count counter``, no ``_total`` suffix, which prometheus_client
always adds to counters, so these are rendered by ``render_triton_counters``):
counters ``nv_inference_request_success``, ``nv_inference_request_failure``,
``nv_inference_count``, ``nv_inference_exec_count``, ``nv_inference_request_duration_us``,
``nv_inference_queue_duration_us``, ``nv_inference_compute_infer_duration_us``; gauge
``nv_inference_pending_request_count``. As in Triton with the vLLM backend (whose
``execute`` hands requests to vLLM at once), "pending" and "queue duration" only cover
the short time between receiving a request and handing it to the engine: queue depth
shows in ``vllm:num_requests_waiting`` (and in Envoy), not here.

vLLM (label ``model_name``; prometheus_client accepts ':' in names): gauges
``vllm:num_requests_running``, ``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc``
(0-1, read from the engine snapshot at scrape time); histograms with vLLM's buckets
``vllm:time_to_first_token_seconds``, ``vllm:time_per_output_token_seconds``,
``vllm:e2e_request_latency_seconds``, ``vllm:request_queue_time_seconds``; counters
``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``.

Units: every latency is *real wall-clock* time (what a Prometheus user sees), i.e.
simulated time already multiplied by ``--time-scale``. Queue time and TTFT come from
the engine's admission / first-token times mapped to the wall clock (measured from the
request's arrival); e2e is measured by the server when it hands the last response to
gRPC, so it includes the driver's delivery lag.

Thread-safety: updates happen on the event loop; scrapes run on the HTTP thread and
only read ints/floats and an immutable stats snapshot (atomic under the GIL).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from caravan.replica.contract import MODEL_VERSION
from caravan.replica.engine import Advance, EngineStats

TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
TPOT_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
REQUEST_LATENCY_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)

TRITON_COUNTERS = {
    "nv_inference_request_success": "Number of successful inference requests, all batch sizes",
    "nv_inference_request_failure": "Number of failed inference requests, all batch sizes",
    "nv_inference_count": "Number of inferences performed (does not include cached requests)",
    "nv_inference_exec_count": "Number of model executions performed "
    "(does not include cached requests)",
    "nv_inference_request_duration_us": "Cumulative inference request duration in microseconds",
    "nv_inference_queue_duration_us": "Cumulative inference queuing duration in microseconds",
    "nv_inference_compute_infer_duration_us": "Cumulative compute inference duration "
    "in microseconds",
}


@dataclass
class TritonCounters:
    """Plain counters, updated on the event loop."""

    success: int = 0
    failure: int = 0
    count: int = 0
    exec_count: int = 0
    request_duration_us: int = 0
    queue_duration_us: int = 0
    compute_infer_duration_us: int = 0
    pending: int = 0

    def values(self) -> dict[str, int]:
        return {
            "nv_inference_request_success": self.success,
            "nv_inference_request_failure": self.failure,
            "nv_inference_count": self.count,
            "nv_inference_exec_count": self.exec_count,
            "nv_inference_request_duration_us": self.request_duration_us,
            "nv_inference_queue_duration_us": self.queue_duration_us,
            "nv_inference_compute_infer_duration_us": self.compute_infer_duration_us,
        }


class _SnapshotCollector(Collector):
    """Emits the gauges (Triton pending count, vLLM engine state) from current values."""

    def __init__(
        self, model: str, counters: TritonCounters, stats: Callable[[], EngineStats]
    ) -> None:
        self._model = model
        self._counters = counters
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        labels = {"model": self._model, "version": MODEL_VERSION}
        yield _gauge(
            "nv_inference_pending_request_count",
            "Instantaneous number of pending requests awaiting execution per-model.",
            labels,
            self._counters.pending,
        )
        st = self._stats()
        vl = {"model_name": self._model}
        yield _gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            vl,
            st.running,
        )
        yield _gauge(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            vl,
            st.waiting,
        )
        yield _gauge(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            vl,
            st.kv_usage,
        )


def render_triton_counters(model: str, counters: TritonCounters) -> str:
    """Triton's counters exactly as Triton prints them (``# TYPE <name> counter`` and
    samples without a ``_total`` suffix, which prometheus_client cannot emit)."""
    lines: list[str] = []
    for name, value in counters.values().items():
        lines.append(f"# HELP {name} {TRITON_COUNTERS[name]}")
        lines.append(f"# TYPE {name} counter")
        lines.append(f'{name}{{model="{_escape(model)}",version="{MODEL_VERSION}"}} {value}')
    return "\n".join(lines) + "\n"


def _escape(label_value: str) -> str:
    return label_value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _gauge(name: str, doc: str, labels: dict[str, str], value: float) -> Metric:
    m = Metric(name, doc, "gauge")
    m.add_sample(name, labels, float(value))
    return m


class ReplicaMetrics:
    """All metrics of one replica serving ``model``. Also an ``EngineObserver``."""

    def __init__(self, model: str, stats: Callable[[], EngineStats]) -> None:
        self.model = model
        self.registry = CollectorRegistry(auto_describe=False)
        self.triton = TritonCounters()
        self.registry.register(_SnapshotCollector(model, self.triton, stats))
        r, ln = self.registry, ["model_name"]
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            ln,
            registry=r,
            buckets=TTFT_BUCKETS,
        ).labels(model)
        self.tpot = Histogram(
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds.",
            ln,
            registry=r,
            buckets=TPOT_BUCKETS,
        ).labels(model)
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            ln,
            registry=r,
            buckets=REQUEST_LATENCY_BUCKETS,
        ).labels(model)
        self.queue = Histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            ln,
            registry=r,
            buckets=REQUEST_LATENCY_BUCKETS,
        ).labels(model)
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", ln, registry=r
        ).labels(model)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Number of generation tokens processed.", ln, registry=r
        ).labels(model)

    def exposition(self) -> bytes:
        """The /metrics page: Triton counters, then the registry (text format 0.0.4)."""
        head = render_triton_counters(self.model, self.triton).encode()
        return head + generate_latest(self.registry)

    # -- engine (EngineObserver) -------------------------------------------------
    def engine_advanced(self, adv: Advance, stats: EngineStats, ms_to_s: float) -> None:
        for a in adv.admitted:
            self.queue.observe((a.admitted_ms - a.arrival_ms) * ms_to_s)
        if adv.prompt_tokens:
            self.prompt_tokens.inc(adv.prompt_tokens)
        if adv.generated_tokens:
            self.generation_tokens.inc(adv.generated_tokens)

    # -- request lifecycle (server) ------------------------------------------------
    def received(self) -> None:
        """A request for this model arrived (pending until handed off or failed)."""
        self.triton.pending += 1

    def handed_off(self, queue_s: float) -> None:
        """The request reached the engine after ``queue_s`` seconds."""
        self.triton.pending -= 1
        self.triton.queue_duration_us += int(queue_s * 1e6)

    def first_token(self, ttft_s: float) -> None:
        self.ttft.observe(ttft_s)

    def succeeded(self, e2e_s: float, ttft_s: float, output_tokens: int) -> None:
        t = self.triton
        t.success += 1
        t.count += 1
        t.exec_count += 1
        t.request_duration_us += int(e2e_s * 1e6)
        t.compute_infer_duration_us += int(e2e_s * 1e6)
        self.e2e.observe(e2e_s)
        if output_tokens > 1:
            self.tpot.observe((e2e_s - ttft_s) / (output_tokens - 1))

    def failed(self, pending: bool) -> None:
        """A request failed; ``pending`` if it had not been handed off yet."""
        self.triton.failure += 1
        if pending:
            self.triton.pending -= 1


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No per-scrape access log."""


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def start_metrics_server(metrics: ReplicaMetrics, host: str, port: int) -> WSGIServer:
    """Serve ``metrics.exposition()`` at ``/metrics`` on a daemon thread.

    Returns the server; call ``shutdown()`` then ``server_close()`` to stop it.
    Raises OSError if the port is taken.
    """

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("PATH_INFO", "/") not in ("/metrics", "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: try /metrics\n"]
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)])
        return [metrics.exposition()]

    httpd = make_server(host, port, app, _ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
    return httpd
