"""The ``llm_demand`` signal (Little's law) evaluated by the REAL Prometheus.

/usr/bin/prometheus scrapes two in-test exporters every second: Envoy's cluster
counter and gauges, and replica histograms under vLLM's label (``model_name``, as the
simulator and the vLLM engine export) and Triton's (``model``, as Triton's vLLM backend
does). A feeder thread adds 10 requests/s, each with e2e 4 s and TTFT 1 s, so the
demand is 10 req/s x (4 - 1) s = 30 requests in service, while the in-flight gauges
read 100 (a backlog): the signal must follow the arrivals, not the backlog.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from caravan.autoscaler.ports import MetricsError
from caravan.autoscaler.prometheus import PrometheusMetricsSource
from caravan.local.process import ChildProcess, free_port, wait_for_port
from caravan.spec import EngineArgs, ModelSpec
from caravan.spec.autoscaling import ScalingPolicy, policy_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("prometheus") is None and not Path("/usr/bin/prometheus").exists(),
        reason="Debian's prometheus is not installed",
    ),
]

FED = ("vllm", "triton")  # models fed with traffic, one per label convention
IDLE = "idle"  # no replica metrics at all: the signal falls back to in-flight
RATE, E2E_S, TTFT_S, BACKLOG = 10.0, 4.0, 1.0, 100.0


def _policy(model: str, signal: str = "llm_demand") -> ScalingPolicy:
    check = {
        "name": "demand",
        "signal": signal,
        "query_window_s": 5,
        "strategy": {"name": "requests-per-replica", "params": {"target": 16}},
    }
    m = ModelSpec(name=model, engine=EngineArgs(model="x"), autoscaling={"checks": [check]})
    p = policy_for(m)
    assert p is not None
    return p


def _feed(stop: threading.Event, requests: Counter, e2e: list[Histogram], ttft: list[Histogram]) -> None:
    """10 requests/s per fed model until ``stop`` (bounded by the fixture's lifetime)."""
    while not stop.wait(1 / RATE):
        for i, model in enumerate(FED):
            requests.labels(f"model-{model}").inc()
            e2e[i].observe(E2E_S)
            ttft[i].observe(TTFT_S)


def _registries() -> tuple[list[CollectorRegistry], Counter, list[Histogram], list[Histogram]]:
    """Envoy's registry, then one replica registry per label convention."""
    envoy, vllm, triton = CollectorRegistry(), CollectorRegistry(), CollectorRegistry()
    cl = ["envoy_cluster_name"]
    requests = Counter("envoy_cluster_upstream_rq", "arrivals", cl, registry=envoy)
    active = Gauge("envoy_cluster_upstream_rq_active", "a", cl, registry=envoy)
    pending = Gauge("envoy_cluster_upstream_rq_pending_active", "p", cl, registry=envoy)
    for model in (*FED, IDLE):
        active.labels(f"model-{model}").set(BACKLOG * 0.3)
        pending.labels(f"model-{model}").set(BACKLOG * 0.7)
    e2e, ttft = [], []
    for reg, labels, values in ((vllm, ["model_name"], ("vllm",)), (triton, ["model", "version"], ("triton", "1"))):
        e2e.append(Histogram("vllm:e2e_request_latency_seconds", "e2e", labels, registry=reg).labels(*values))
        ttft.append(Histogram("vllm:time_to_first_token_seconds", "ttft", labels, registry=reg).labels(*values))
    return [envoy, vllm, triton], requests, e2e, ttft


def _serve(registry: CollectorRegistry) -> tuple[int, ThreadingHTTPServer]:
    """Serve ``registry`` in the classic text format, as Triton and the simulator do
    (prometheus_client's own server negotiates OpenMetrics, which escapes ':' in names)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_PLAIN_0_0_4)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return port, server


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    registries, requests, e2e, ttft = _registries()
    servers, ports = [], []
    for reg in registries:
        port, server = _serve(reg)
        servers.append(server)
        ports.append(port)
    d = tmp_path_factory.mktemp("prom-demand")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "envoy", "static_configs": [{"targets": [f"127.0.0.1:{ports[0]}"]}]},
            {"job_name": "triton", "static_configs": [{"targets": [f"127.0.0.1:{q}" for q in ports[1:]]}]},
        ],
    }
    (d / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    argv = [
        "/usr/bin/prometheus",
        f"--config.file={d / 'prometheus.yml'}",
        f"--storage.tsdb.path={d / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(stop, requests, e2e, ttft), daemon=True)
    feeder.start()
    proc = ChildProcess("prometheus", argv, log_path=d / "prometheus.log").start()
    try:
        wait_for_port("127.0.0.1", port, 20)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        proc.stop()
        feeder.join(timeout=5)
        for srv in servers:
            srv.shutdown()
            srv.server_close()


def _settled(url: str, query: str, want: float, deadline_s: float = 25.0) -> float:
    """Poll ``query`` until it is within 15 % of ``want`` or the deadline; the last value."""
    source, value, end = PrometheusMetricsSource(url, timeout_s=2), float("nan"), time.monotonic() + deadline_s
    while time.monotonic() < end:
        with contextlib.suppress(MetricsError):
            value = source.query(query)
        if abs(value - want) <= 0.15 * want:
            return value
        time.sleep(0.5)
    return value


@pytest.mark.parametrize("model", FED, ids=["vllm-model_name-label", "triton-model-label"])
def test_demand_is_arrivals_times_service_time_not_the_backlog(prometheus: str, model: str) -> None:
    p = _policy(model)
    value = _settled(prometheus, p.render(p.checks[0]), RATE * (E2E_S - TTFT_S))
    assert value == pytest.approx(30.0, rel=0.15)
    assert value < BACKLOG / 2  # the in-flight gauges read 100


def test_demand_without_replica_latencies_falls_back_to_in_flight(prometheus: str) -> None:
    p = _policy(IDLE)
    assert _settled(prometheus, p.render(p.checks[0]), BACKLOG) == BACKLOG


@pytest.mark.parametrize("model", FED, ids=["vllm-model_name-label", "triton-model-label"])
def test_ttft_p95_signal_reads_either_label(prometheus: str, model: str) -> None:
    p = _policy(model, "vllm_ttft_p95")
    # every TTFT is 1.0 s: the p95 interpolates inside prometheus_client's (0.75, 1.0] bucket
    value = _settled(prometheus, p.render(p.checks[0]), 0.95)
    assert 0.75 < value <= TTFT_S
