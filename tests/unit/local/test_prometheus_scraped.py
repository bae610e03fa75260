"""``envoy_scraped`` against a stand-in Prometheus HTTP API (canned answers)."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from caravan.local.process import free_port
from caravan.local.prometheus import envoy_scraped


class _Api(BaseHTTPRequestHandler):
    answer: tuple[int, str] = (200, "")
    queries: list[str] = []

    def do_GET(self) -> None:
        self.queries.append(urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)["query"][0])
        status, body = self.answer
        self.send_response(status)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api() -> Iterator[tuple[int, type[_Api]]]:
    handler = type("Api", (_Api,), {"queries": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server.server_address[1], handler
    server.shutdown()
    server.server_close()


def _result(series: list[object]) -> str:
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": series}})


def test_true_once_envoy_has_a_successful_scrape(api: tuple[int, type[_Api]]) -> None:
    port, handler = api
    handler.answer = (200, _result([{"metric": {"job": "envoy"}, "value": [1.0, "1"]}]))
    assert envoy_scraped(port)
    assert handler.queries == ['up{job="envoy"} == 1']


@pytest.mark.parametrize("answer", [
    (200, _result([])),  # no scrape yet (the first ~5 s)
    (503, "Service Unavailable"),
    (200, "not json"),
    (200, json.dumps({"status": "error"})),
])
def test_false_before_a_scrape_or_on_a_bad_answer(api: tuple[int, type[_Api]], answer: tuple[int, str]) -> None:
    port, handler = api
    handler.answer = answer
    assert not envoy_scraped(port)


def test_false_when_prometheus_is_not_listening() -> None:
    assert not envoy_scraped(free_port(), timeout_s=0.5)
