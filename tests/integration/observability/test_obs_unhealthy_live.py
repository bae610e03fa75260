"""The unhealthy-replica rule and alert over a real Envoy's active gRPC health checks.

Envoy's cluster ``model-demo`` has three endpoints, each a real ``grpc.health.v1`` server:
one SERVING, one NOT_SERVING (what tritonserver answers once the vLLM backend has
unloaded a model whose engine died), and one SERVING but sent as EDS ``DRAINING`` (a
planned drain, which must not count). A real Prometheus runs the rendered rules over
Envoy's ``/stats/prometheus``. Bounded: 30 s for the rule and the alert to appear.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from obs_prom_server import PROMETHEUS, get_json, running_prometheus

from caravan.local.launch import start_envoy
from caravan.local.process import free_port
from caravan.observability import prometheus as prom
from caravan.observability.alerts import REPLICA_UNHEALTHY
from caravan.observability.rules import HEALTHY, UNHEALTHY
from caravan.spec import parse_spec

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="prometheus not installed"),
]
MODEL = "demo"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def health_servers() -> Iterator[list[int]]:
    """Ports of three gRPC health servers: SERVING, NOT_SERVING, SERVING (drained)."""
    servers, ports = [], []
    for status in (SERVING, NOT_SERVING, SERVING):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        servicer = health.HealthServicer()
        servicer.set("", status)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        ports.append(server.add_insecure_port("127.0.0.1:0"))
        server.start()
        servers.append(server)
    yield ports
    for server in servers:
        server.stop(grace=None)


def envoy_bootstrap(admin: int, ports: list[int]) -> dict[str, object]:
    """A static ``model-demo`` cluster with Caravan's kind of gRPC health check."""
    addr = lambda port: {"socket_address": {"address": "127.0.0.1", "port_value": port}}  # noqa: E731
    statuses = ("HEALTHY", "HEALTHY", "DRAINING")
    endpoints = [{"endpoint": {"address": addr(p)}, "health_status": s}
                 for p, s in zip(ports, statuses, strict=True)]
    http2 = {"@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
             "explicit_http_config": {"http2_protocol_options": {}}}
    check = {"timeout": "1s", "interval": "0.5s", "no_traffic_interval": "0.5s",
             "unhealthy_threshold": 2, "healthy_threshold": 1, "grpc_health_check": {}}
    cluster = {
        "name": f"model-{MODEL}", "type": "STATIC", "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": http2},
        "health_checks": [check],
        "load_assignment": {"cluster_name": f"model-{MODEL}",
                            "endpoints": [{"lb_endpoints": endpoints}]},
    }
    return {"admin": {"address": addr(admin)}, "static_resources": {"clusters": [cluster]}}


@pytest.fixture(scope="module")
def envoy_admin(health_servers: list[int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    workdir = tmp_path_factory.mktemp("envoy-hc")
    admin = free_port()
    config = workdir / "envoy.yaml"
    config.write_text(yaml.safe_dump(envoy_bootstrap(admin, health_servers)))
    with start_envoy(config, workdir / "envoy.log", admin_port=admin, concurrency=None):
        yield admin


def _value(url: str, query: str) -> list[tuple[dict[str, str], float]]:
    res = get_json(f"{url}/api/v1/query", {"query": query})
    if res.get("status") != "success":
        return []
    return [(r["metric"], float(r["value"][1])) for r in res["data"]["result"]]


def _one_per_model(url: str, query: str) -> dict[str, float]:
    """``query``'s series as model -> value."""
    return {labels.get("model", ""): v for labels, v in _value(url, query)}


def _settled(url: str, alert: str, timeout_s: float) -> None:
    """Wait until Envoy's health checks have shown in the rule and the alert is pending."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _value(url, alert) and _one_per_model(url, UNHEALTHY) == {MODEL: 1.0}:
            return
        time.sleep(0.5)


def test_a_not_serving_replica_is_unhealthy_and_a_drained_one_is_not(
    envoy_admin: int, tmp_path: Path
) -> None:
    spec = parse_spec({"models": [{"name": MODEL, "engine": {"model": "x"}}]})
    (tmp_path / "rules").mkdir()
    for rel, text in prom.render(spec).items():
        if "/rules/" in rel:
            (tmp_path / "rules" / Path(rel).name).write_text(text)
    config = prom.static_config(
        f"127.0.0.1:{envoy_admin}", {},
        rule_files=["rules/caravan-recording.yml", "rules/caravan-alerts.yml"])
    alert = f'ALERTS{{alertname="{REPLICA_UNHEALTHY.name}"}}'
    with running_prometheus(tmp_path, config) as url:
        _settled(url, alert, timeout_s=30)
        assert _one_per_model(url, UNHEALTHY) == {MODEL: 1.0}  # not 2: the drained one is out
        assert _one_per_model(url, HEALTHY) == {MODEL: 1.0}
        ((labels, _),) = _value(url, alert)
        assert labels["model"] == MODEL and labels["alertstate"] in {"pending", "firing"}
