"""PrometheusMetricsSource and ``caravan autoscale --explain`` against the REAL Prometheus.

/usr/bin/prometheus runs as a child process on a free port, scraping two in-test
prometheus_client exporters every second: one standing in for Envoy's cluster gauges,
one for a replica's metrics endpoint (job ``triton``, target label ``caravan_model``, like ``caravan up``).
"""

from __future__ import annotations

import math
import shutil
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from typer.testing import CliRunner

from caravan.autoscaler.ports import MetricsError
from caravan.autoscaler.prometheus import PrometheusMetricsSource
from caravan.local.process import ChildProcess, free_port, wait_for_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("prometheus") is None and not Path("/usr/bin/prometheus").exists(),
        reason="Debian's prometheus is not installed",
    ),
]

IN_FLIGHT = (
    'sum(envoy_cluster_upstream_rq_active{envoy_cluster_name="model-llama"})'
    ' + sum(envoy_cluster_upstream_rq_pending_active{envoy_cluster_name="model-llama"})'
)


@dataclass
class Stack:
    url: str
    active: Gauge
    pending: Gauge
    odd: Gauge


def _exporter(registry: CollectorRegistry) -> tuple[int, object]:
    port = free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    return port, server


def _config(envoy_port: int, replica_port: int) -> dict[str, object]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "envoy", "static_configs": [{"targets": [f"127.0.0.1:{envoy_port}"]}]},
            {
                "job_name": "triton",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{replica_port}"], "labels": {"caravan_model": "llama"}}
                ],
            },
        ],
    }


def _wait_scraped(url: str, deadline_s: float = 30.0) -> None:
    source = PrometheusMetricsSource(url, timeout_s=2)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if source.query('count(up{job=~"envoy|triton"} == 1)') == 2:
                return
        except MetricsError:
            pass
        time.sleep(0.3)
    raise TimeoutError("Prometheus did not scrape both exporters in time")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    envoy_reg, replica_reg = CollectorRegistry(), CollectorRegistry()
    labels = ["envoy_cluster_name"]
    active = Gauge("envoy_cluster_upstream_rq_active", "a", labels, registry=envoy_reg)
    pending = Gauge("envoy_cluster_upstream_rq_pending_active", "p", labels, registry=envoy_reg)
    odd = Gauge("caravan_test_odd", "NaN and two-series cases", ["k"], registry=envoy_reg)
    Gauge("nv_inference_count", "replica is up", registry=replica_reg).set(1)
    active.labels("model-llama").set(30)
    pending.labels("model-llama").set(10)
    active.labels("model-other").set(99)
    odd.labels("nan").set(math.nan)
    odd.labels("a").set(1)
    odd.labels("b").set(2)
    envoy_port, envoy_srv = _exporter(envoy_reg)
    replica_port, replica_srv = _exporter(replica_reg)
    d = tmp_path_factory.mktemp("prom")
    (d / "prometheus.yml").write_text(yaml.safe_dump(_config(envoy_port, replica_port)))
    port = free_port()
    argv = [
        "/usr/bin/prometheus",
        f"--config.file={d / 'prometheus.yml'}",
        f"--storage.tsdb.path={d / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    proc = ChildProcess("prometheus", argv, log_path=d / "prometheus.log").start()
    try:
        wait_for_port("127.0.0.1", port, 20)
        url = f"http://127.0.0.1:{port}"
        _wait_scraped(url)
        yield Stack(url, active, pending, odd)
    finally:
        proc.stop()
        for srv in (envoy_srv, replica_srv):
            srv.shutdown()  # type: ignore[attr-defined]
            srv.server_close()  # type: ignore[attr-defined]


def test_default_in_flight_signal_sums_active_and_pending(stack: Stack) -> None:
    assert PrometheusMetricsSource(stack.url).query(IN_FLIGHT) == 40


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ('envoy_cluster_upstream_rq_active{envoy_cluster_name="model-nope"}', "no series"),
        ('caravan_test_odd{k=~"a|b"}', "2 series"),
        ('caravan_test_odd{k="nan"}', "NaN"),
        ("sum(rate(", "HTTP 400"),
    ],
    ids=["empty", "two-series", "nan", "bad-promql"],
)
def test_unusable_answers_are_errors_naming_the_query(
    stack: Stack, query: str, needle: str
) -> None:
    with pytest.raises(MetricsError, match=needle) as info:
        PrometheusMetricsSource(stack.url).query(query)
    assert query in str(info.value)


def test_unreachable_prometheus_is_an_error_not_zero() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MetricsError, match="unreachable"):
        PrometheusMetricsSource(url, timeout_s=1).query("up")


def _spec(tmp_path: Path) -> Path:
    data = {
        "models": [
            {
                "name": "llama",
                "engine": {"model": "x"},
                "replicas": {"min": 1, "max": 4},
                "autoscaling": {
                    "checks": [
                        {
                            "name": "in-flight",
                            "signal": "envoy_in_flight",
                            "strategy": {"name": "requests-per-replica", "params": {"target": 16}},
                        },
                        {
                            "name": "missing",
                            "query": 'sum(nope{model="{model}"})',
                            "on_error": "ignore",
                            "strategy": {"name": "target-value", "params": {"target": 1}},
                        },
                    ]
                },
            }
        ]
    }
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_explain_prints_checks_and_the_decision_without_scaling(
    stack: Stack, tmp_path: Path
) -> None:
    from caravan.cli import app

    result = CliRunner().invoke(
        app,
        [
            "autoscale",
            "--spec",
            str(_spec(tmp_path)),
            "--prometheus",
            stack.url,
            "--once",
            "--explain",
            "--counts-from",
            "prometheus",
        ],
    )
    out = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "model llama: current 1" in out
    assert "in-flight" in out and "40" in out and "up to 3" in out
    assert "missing" in out and "error (ignore)" in out
    assert "decision: up 1 -> 3 (would scale)" in out


def test_autoscaler_metrics_endpoint_serves_decisions(stack: Stack, tmp_path: Path) -> None:
    from caravan.autoscaler.fleet import PrometheusReplicaCounts
    from caravan.autoscaler.handler import build_autoscaler
    from caravan.spec import load_spec

    reg = CollectorRegistry()
    source = PrometheusMetricsSource(stack.url)
    scaler = build_autoscaler(
        load_spec(_spec(tmp_path)), source, PrometheusReplicaCounts(source), reg, dry_run=True
    )
    port, server = _exporter(reg)
    try:
        [decision] = scaler.once(act=True)
        url = f"http://127.0.0.1:{port}/metrics"
        body = urllib.request.urlopen(url, timeout=5).read().decode()
    finally:
        server.shutdown()  # type: ignore[attr-defined]
        server.server_close()  # type: ignore[attr-defined]
    assert (decision.action, decision.desired) == ("dry-run", 3)
    assert 'caravan_autoscaler_desired_count{model="llama"} 3.0' in body
    assert 'caravan_autoscaler_check_value{check="in-flight",model="llama"} 40.0' in body
    assert 'caravan_autoscaler_check_vote{check="missing",model="llama"} NaN' in body
