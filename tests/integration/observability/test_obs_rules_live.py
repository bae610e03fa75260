"""Every recording rule yields series in a real Prometheus scraping a real Envoy.

Envoy (static bootstrap, cluster ``model-<name>``) proxies a few HTTP requests to a
small test exporter, which also serves Triton/vLLM-shaped metrics (the names and labels
tritonserver 2.51 and its vLLM backend export: ``model``, ``version``). Prometheus runs
the rendered ``static_config`` and rule files with a 1 s interval.
Bounded: 6 requests through Envoy, 40 s for the rules to fill in.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from obs_prom_server import PROMETHEUS, get_json, running_prometheus

from caravan.local.launch import start_envoy, wait_until
from caravan.local.process import free_port, port_open
from caravan.observability import prometheus as prom
from caravan.observability.panel_plot import plot_panels
from caravan.observability.rules import INSTREAM_5M, SUCCESS_5M, recorded_names
from caravan.spec import PlatformSpec, parse_spec

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="prometheus not installed"),
]
MODEL = "demo"
BUCKETS = (0.1, 0.5, 1.0, 5.0)


def exposition(elapsed_s: float) -> str:
    """Counters growing with time: 10 req/s handed to the engine, 1 failing at Triton,
    8 of 9 finishing (1/s fails in-stream), 300 output tokens/s."""
    t = max(elapsed_s, 0.0)
    labels = f'model="{MODEL}",version="1"'
    lines = [f"nv_inference_request_success{{{labels}}} {9 * t:.3f}",
             f"nv_inference_request_failure{{{labels},reason=\"BACKEND\"}} {1 * t:.3f}",
             f"vllm:generation_tokens_total{{{labels}}} {300 * t:.3f}",
             f"vllm:prompt_tokens_total{{{labels}}} {100 * t:.3f}"]
    for metric in ("vllm:time_to_first_token_seconds", "vllm:e2e_request_latency_seconds"):
        for le, share in zip((*map(str, BUCKETS), "+Inf"), (0.5, 0.9, 1.0, 1.0, 1.0), strict=True):
            lines.append(f'{metric}_bucket{{{labels},le="{le}"}} {8 * t * share:.3f}')
        lines.append(f"{metric}_count{{{labels}}} {8 * t:.3f}")
        lines.append(f"{metric}_sum{{{labels}}} {2 * t:.3f}")
    return "\n".join(lines) + "\n"


class _Handler(BaseHTTPRequestHandler):
    started = time.monotonic()

    def do_GET(self) -> None:
        status, body = 200, b"ok\n"
        if self.path == "/metrics":
            body = exposition(time.monotonic() - self.started).encode()
        elif self.path == "/fail":
            status = 503
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def exporter() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def envoy_bootstrap(admin: int, listen: int, upstream: int) -> dict[str, object]:
    addr = lambda port: {"socket_address": {"address": "127.0.0.1", "port_value": port}}  # noqa: E731
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                 ".HttpConnectionManager",
        "stat_prefix": "ingress",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": f"model-{MODEL}"}}]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    return {
        "admin": {"address": addr(admin)},
        "static_resources": {
            "listeners": [{"name": "in", "address": addr(listen), "filter_chains": [{"filters": [
                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}],
            "clusters": [{"name": f"model-{MODEL}", "type": "STATIC", "load_assignment": {
                "cluster_name": f"model-{MODEL}",
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": addr(upstream)}}]}]}}],
        },
    }


@pytest.fixture(scope="module")
def envoy(exporter: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    workdir = tmp_path_factory.mktemp("envoy")
    admin, listen = free_port(), free_port()
    config = workdir / "envoy.yaml"
    config.write_text(yaml.safe_dump(envoy_bootstrap(admin, listen, exporter)))
    with start_envoy(config, workdir / "envoy.log", admin_port=admin, concurrency=None) as proc:
        wait_until(lambda: port_open("127.0.0.1", listen), 20, "Envoy's listener", procs=[proc])
        yield admin, listen


def _send(listen: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{listen}{path}", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def _spec() -> PlatformSpec:
    return parse_spec({"models": [{"name": MODEL, "engine": {"model": "x"}}]})


def _empty_rules(url: str, names: frozenset[str]) -> set[str]:
    empty = set()
    for name in names:
        res = get_json(f"{url}/api/v1/query", {"query": name})
        if res["status"] != "success" or not res["data"]["result"]:
            empty.add(name)
    return empty


def _only_value(url: str, query: str) -> float:
    """The value of ``query``'s one series, which must be the model's."""
    (series,) = get_json(f"{url}/api/v1/query", {"query": query})["data"]["result"]
    assert series["metric"]["model"] == MODEL
    return float(series["value"][1])


def test_every_recording_rule_has_series(
    envoy: tuple[int, int], exporter: int, tmp_path: Path
) -> None:
    admin, listen = envoy
    statuses = [_send(listen, path) for path in ("/", "/", "/", "/", "/fail", "/fail")]
    assert statuses == [200] * 4 + [503] * 2
    spec = _spec()
    for rel, text in prom.render(spec).items():
        if "/rules/" in rel:
            (tmp_path / "rules").mkdir(exist_ok=True)
            (tmp_path / "rules" / Path(rel).name).write_text(text)
    config = prom.static_config(
        f"127.0.0.1:{admin}", {MODEL: [f"127.0.0.1:{exporter}"]},
        rule_files=["rules/caravan-recording.yml", "rules/caravan-alerts.yml"],
    )
    names = recorded_names(spec)
    with running_prometheus(tmp_path, config) as url:
        deadline = time.monotonic() + 40
        empty = _empty_rules(url, names)
        while empty and time.monotonic() < deadline:
            time.sleep(1)
            _send(listen, "/")  # keep Envoy's rate non-zero
            empty = _empty_rules(url, names)
        assert not empty, f"recording rules without series: {sorted(empty)}"
        ratio = get_json(f"{url}/api/v1/query", {"query": "model:caravan_errors:ratio_rate5m"})
        (series,) = ratio["data"]["result"]
        assert series["metric"] == {"__name__": "model:caravan_errors:ratio_rate5m", "model": MODEL}
        assert 0.0 < float(series["value"][1]) < 1.0
        # A young series fills little of a 5m window, so compare shares, not rates.
        share = _only_value(url, f"{INSTREAM_5M} / on(model) {SUCCESS_5M}")
        assert share == pytest.approx(1 / 9, rel=0.1)  # 1 of the 9/s handed over fails
        drawn = plot_panels(url, MODEL, tmp_path / "panels.png", window_s=60)
    with_data = {title for title, lines in drawn.items() if lines}
    assert with_data == {"Requests/s", "Errors", "Time to first token", "End-to-end latency",
                         "Tokens/s", "In-flight requests", "Replicas: desired vs running"}
    assert (tmp_path / "panels.png").stat().st_size > 10_000
