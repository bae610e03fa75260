"""Client-sent forwarding and identity headers do not reach a replica (issue 17, Deliver 6).

Real Envoy with the rendered listener, in-process control plane, and the xDS tests' stub
replica, which echoes every request header it received (``request_headers``; Triton has
no way to echo them). A client spoofs ``x-forwarded-for``, ``x-request-id``,
``x-envoy-*`` overrides and Caravan's identity headers; the replica must see Envoy's own
values only (``caravan.xds.headers``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from tests.integration.xds.xds_envoy_harness import (
    BackgroundControlPlane,
    start_envoy,
    start_stub,
    stream_infer,
    wait_serving,
)

from caravan.discovery.registry_file import write_registry
from caravan.discovery.types import Replica
from caravan.local.process import free_port
from caravan.spec import parse_spec

pytestmark = pytest.mark.integration

SPOOFED = {
    "x-forwarded-for": "6.6.6.6",
    "x-forwarded-host": "evil.example",
    "forwarded": "for=6.6.6.6",
    "x-real-ip": "6.6.6.6",
    "x-request-id": "spoofed-request-id",
    "x-envoy-max-retries": "9",
    "x-envoy-upstream-rq-timeout-ms": "1",
    "x-envoy-internal": "true",
    "x-envoy-original-path": "/admin",
    "x-caravan-upstream": "6.6.6.6:1",
    "x-caravan-client": "admin",
    "x-caravan-subject": "admin",
}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("headers")
    spec = parse_spec({
        "models": [{"name": "alpha", "engine": {"model": "m"},
                    "routing": {"maglev_table_size": 1031}}],
        "envoy": {"listen_port": free_port(), "admin_port": free_port()},
        "control_plane": {"debounce_quiet_ms": 20, "debounce_max_ms": 200},
    })
    stub, port = start_stub(tmp, "alpha-0", "alpha")
    registry = tmp / "registry.json"
    write_registry(registry, [Replica("alpha-0", "alpha", "127.0.0.1", port)])
    cp = BackgroundControlPlane(spec, registry)
    envoy = None
    try:
        envoy = start_envoy(tmp, spec, [("127.0.0.1", cp.cp.port)], node_id="headers")
        wait_serving(spec, "model-alpha", {f"127.0.0.1:{port}"})
        yield f"127.0.0.1:{spec.envoy.listen_port}"
    finally:
        if envoy is not None:
            envoy.stop()
        cp.stop()
        stub.stop()


def _seen(url: str, headers: dict[str, str]) -> dict[str, list[str]]:
    reply = stream_infer(url, "alpha", headers)
    pairs = json.loads(reply.responses[-1].infer_response.parameters["request_headers"].string_param)
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        out.setdefault(name, []).append(value)
    return out


def test_spoofed_forwarding_and_identity_headers_do_not_reach_the_replica(url: str) -> None:
    seen = _seen(url, SPOOFED)
    leaked = {k: v for k, v in seen.items() if any(s == SPOOFED.get(k) for s in v)}
    assert leaked == {}
    assert seen["x-forwarded-for"] == ["127.0.0.1"]  # Envoy's own: the client's address
    (rid,) = seen["x-request-id"]
    uuid.UUID(rid)  # Envoy's generated id
    assert not [k for k in seen if k.startswith("x-envoy-") and k in SPOOFED]
    for name in ("x-forwarded-host", "forwarded", "x-real-ip", "x-caravan-upstream",
                 "x-caravan-client", "x-caravan-subject"):
        assert name not in seen, name


def test_every_request_gets_a_fresh_request_id(url: str) -> None:
    first = _seen(url, {})["x-request-id"]
    second = _seen(url, {"x-request-id": first[0]})["x-request-id"]
    assert first != second
