"""The admin HTTP endpoint, with a tiny fake ``ControlPlaneState``."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from caravan.local.process import free_port
from caravan.xds.admin import AdminServer, encode, is_loopback, route


@dataclass
class FakeState:
    is_ready: bool = False
    snapshot: dict[str, Any] = field(default_factory=lambda: {"version": "v1", "clusters": []})
    clients: list[dict[str, Any]] = field(default_factory=list)
    fail: bool = False

    def ready(self) -> bool:
        return self.is_ready

    def snapshot_json(self) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("boom")
        return self.snapshot

    def clients_json(self) -> list[dict[str, Any]]:
        return self.clients


def registry_with_counter() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("caravan_xds_pushes_total", "pushes", ["type"], registry=reg).labels("CDS").inc(3)
    return reg


ROUTES = [
    # (id, method, path, ready, status, body fragment)
    ("healthz", "GET", "/healthz", False, 200, "ok"),
    ("readyz before snapshot", "GET", "/readyz", False, 503, "not ready"),
    ("readyz after snapshot", "GET", "/readyz", True, 200, "ready"),
    ("metrics", "GET", "/metrics", False, 200, 'caravan_xds_pushes_total{type="CDS"} 3.0'),
    ("snapshot", "GET", "/debug/snapshot", True, 200, '"version": "v1"'),
    ("clients", "GET", "/debug/clients?pretty=1", True, 200, '"node": "envoy-1"'),
    ("unknown path lists endpoints", "GET", "/nope", True, 404, "/debug/clients"),
    ("post refused", "POST", "/healthz", True, 405, "POST not allowed"),
]


@pytest.mark.parametrize(
    ("method", "path", "ready", "status", "fragment"),
    [r[1:] for r in ROUTES],
    ids=[r[0] for r in ROUTES],
)
def test_route(method: str, path: str, ready: bool, status: int, fragment: str) -> None:
    state = FakeState(is_ready=ready, clients=[{"node": "envoy-1", "acked": {"CDS": "abc"}}])
    resp = route(method, path, state, registry_with_counter())
    assert resp.status == status
    assert fragment in resp.body.decode()


def test_state_failure_is_a_500_not_a_crash() -> None:
    resp = route("GET", "/debug/snapshot", FakeState(fail=True), CollectorRegistry())
    assert (resp.status, resp.body) == (500, b"internal error: RuntimeError\n")


def test_encode_head_has_headers_only() -> None:
    resp = route("GET", "/healthz", FakeState(), CollectorRegistry())
    full, head = encode(resp), encode(resp, head_only=True)
    assert full.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 3\r\n" in head
    assert full == head + b"ok\n"


def fetch(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def test_served_over_http_and_readiness_flips() -> None:
    state = FakeState(clients=[{"node": "envoy-1"}])

    async def scenario() -> None:
        server = await AdminServer(state, registry_with_counter(), port=free_port()).start()
        base = f"http://127.0.0.1:{server.port}"
        try:
            assert (await asyncio.to_thread(fetch, base + "/readyz"))[0] == 503
            state.is_ready = True
            assert (await asyncio.to_thread(fetch, base + "/readyz"))[0] == 200
            status, ctype, body = await asyncio.to_thread(fetch, base + "/debug/clients")
            assert (status, ctype, json.loads(body)) == (
                200,
                "application/json",
                [{"node": "envoy-1"}],
            )
            status, ctype, body = await asyncio.to_thread(fetch, base + "/metrics")
            assert status == 200 and ctype.startswith("text/plain")
            assert "caravan_xds_pushes_total" in body
            # a garbage request gets a 400 and does not take the server down
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"NONSENSE\r\n\r\n")
            assert (await reader.read()).startswith(b"HTTP/1.1 400 ")
            writer.close()
            assert (await asyncio.to_thread(fetch, base + "/healthz"))[:3:2] == (200, "ok\n")
        finally:
            await server.stop()
        with pytest.raises(urllib.error.URLError):
            await asyncio.to_thread(fetch, base + "/healthz")

    asyncio.run(asyncio.wait_for(scenario(), 30))


@pytest.mark.parametrize("path", ["/debug/snapshot", "/debug/clients?x=1", "/debug/nope"])
def test_debug_endpoints_refuse_non_loopback_clients(path: str) -> None:
    resp = route("GET", path, FakeState(is_ready=True), registry_with_counter(), local=False)
    assert resp.status == 403 and b"loopback clients only" in resp.body
    assert route("GET", "/metrics", FakeState(), registry_with_counter(), local=False).status == 200
    assert route("GET", "/healthz", FakeState(), registry_with_counter(), local=False).status == 200


@pytest.mark.parametrize(("peer", "local"), [
    (("127.0.0.1", 5000), True), (("127.9.9.9", 1), True), (("::1", 1, 0, 0), True),
    (("10.0.0.5", 5000), False), (("fd00::2", 1, 0, 0), False), (("fe80::1%eth0", 1, 0, 2), False),
    (None, False), (("not-an-ip", 1), False), ((), False),
])
def test_is_loopback(peer: object, local: bool) -> None:
    assert is_loopback(peer) is local
