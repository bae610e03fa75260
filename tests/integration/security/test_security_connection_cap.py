"""Envoy holds at most ``envoy.max_connections`` downstream connections (issue 17, Low: no
connection cap), on the real Envoy with the rendered bootstrap's overload manager.

A client that opens connections and sends nothing takes the cap; the next connection is
closed on accept (the gRPC client sees UNAVAILABLE) and counted in
``downstream_global_cx_overflow``; once those connections close, requests are served again.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import grpc
import pytest
from tests.integration.xds.xds_envoy_harness import (
    BackgroundControlPlane,
    admin_get,
    start_envoy,
    start_stub,
    stream_infer,
    wait_serving,
    wait_until,
)

from caravan.discovery.registry_file import write_registry
from caravan.discovery.types import Replica
from caravan.local.process import free_port
from caravan.spec import PlatformSpec, parse_spec

pytestmark = pytest.mark.integration
CAP = 3


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformSpec]:
    tmp = tmp_path_factory.mktemp("conncap")
    spec = parse_spec({
        "models": [{"name": "alpha", "engine": {"model": "m"},
                    "routing": {"maglev_table_size": 1031}}],
        "envoy": {"listen_port": free_port(), "admin_port": free_port(), "max_connections": CAP},
        "control_plane": {"debounce_quiet_ms": 20, "debounce_max_ms": 200},
    })
    stub, port = start_stub(tmp, "alpha-0", "alpha")
    registry = tmp / "registry.json"
    write_registry(registry, [Replica("alpha-0", "alpha", "127.0.0.1", port)])
    cp = BackgroundControlPlane(spec, registry)
    envoy = None
    try:
        envoy = start_envoy(tmp, spec, [("127.0.0.1", cp.cp.port)], node_id="conncap")
        wait_serving(spec, "model-alpha", {f"127.0.0.1:{port}"})
        yield spec
    finally:
        if envoy is not None:
            envoy.stop()
        cp.stop()
        stub.stop()


def _stat(spec: PlatformSpec, suffix: str) -> int:
    lines = admin_get(spec.envoy.admin_port, "/stats?filter=" + suffix).splitlines()
    return sum(int(v) for k, _, v in (ln.partition(": ") for ln in lines) if k.endswith(suffix))


def _served(url: str) -> bool:
    try:
        return bool(stream_infer(url, "alpha", {}, timeout_s=3).responses)
    except grpc.RpcError:
        return False


def test_connections_past_the_cap_are_closed_and_service_resumes(spec: PlatformSpec) -> None:
    url, port = f"127.0.0.1:{spec.envoy.listen_port}", spec.envoy.listen_port
    active = f"listener.127.0.0.1_{port}.downstream_cx_active"
    assert _served(url)
    wait_until(lambda: _stat(spec, active) == 0, 10, "the first connection closed")
    idle = [socket.create_connection(("127.0.0.1", port), timeout=3) for _ in range(CAP)]
    try:
        wait_until(lambda: _stat(spec, active) == CAP, 10, "idle connections held")
        with pytest.raises(grpc.RpcError) as info:
            stream_infer(url, "alpha", {}, timeout_s=3)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert _stat(spec, "downstream_global_cx_overflow") >= 1
    finally:
        for s in idle:
            s.close()
    wait_until(lambda: _served(url), 15, "requests served once the idle connections closed")
