"""A stream's whole duration is bounded, however busy it is, and slow headers close their
connection (issue 17, Low: no ``request_timeout`` / ``max_stream_duration``; a slow sender
held a stream 500 s).

Real Envoy with the rendered listener and routes, an in-process control plane, one real
``tritonserver`` replica (simulated engine). The model's ``routing.max_stream_duration_s``
is ``LIMIT_S``; the idle timeout is shorter, and both the trickling client and the long
answer keep the stream busier than it, so only the duration bound can end them.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from tests.integration.xds.xds_envoy_harness import BackgroundControlPlane, wait_serving

from caravan.bench.wire import MODEL_STREAM_INFER, decode_stream_response, encode_request
from caravan.discovery.registry_file import write_registry
from caravan.local.launch import Launcher
from caravan.local.process import free_port
from caravan.spec import PlatformSpec, parse_spec
from caravan.triton.launcher import ReplicaOptions

pytestmark = pytest.mark.integration
LIMIT_S = 1.0
HEADERS_S = 1.0
# Real time (~75 tokens/s): a 250-token answer takes ~3.3 s, longer than LIMIT_S.
SLOW_REPLICA = ReplicaOptions(time_scale=1.0, stream_interval_ms=0, exit_timeout_s=10)


@pytest.fixture(scope="module")
def spec(module_launcher: Launcher, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformSpec]:
    tmp: Path = tmp_path_factory.mktemp("duration")
    spec = parse_spec({
        "models": [{"name": "alpha", "engine": {"model": "m"},
                    "routing": {"maglev_table_size": 1031, "per_try_timeout_s": 0.5,
                                "stream_idle_timeout_s": 0.8, "max_stream_duration_s": LIMIT_S}}],
        "envoy": {"listen_port": free_port(), "admin_port": free_port(),
                  "request_headers_timeout_s": HEADERS_S},
        "control_plane": {"debounce_quiet_ms": 20, "debounce_max_ms": 200},
    })
    replica = module_launcher.replica("alpha-0", "alpha", SLOW_REPLICA)
    registry = tmp / "registry.json"
    write_registry(registry, [replica.registration()])
    cp = BackgroundControlPlane(spec, registry)
    try:
        module_launcher.envoy(spec, [("127.0.0.1", cp.cp.port)], node_id="duration")
        wait_serving(spec, "model-alpha", {replica.endpoint})
        yield spec
    finally:
        cp.stop()


# How a stream cut at its duration ends for the client. Before response headers Envoy
# answers DEADLINE_EXCEEDED; after them it resets the stream (RST_STREAM INTERNAL_ERROR:
# gRPC INTERNAL), unless the replica's own deadline fires first (Envoy forwards the
# capped grpc-timeout upstream, and tritonserver then ends the call DEADLINE_EXCEEDED).
CUT = {"INTERNAL", "DEADLINE_EXCEEDED"}


def _stream(url: str, requests: Iterator[bytes], deadline_s: float | None) -> tuple[str, int, float]:
    """Run one ModelStreamInfer stream to its end: (gRPC status name, responses, seconds)."""
    got, start = 0, time.monotonic()
    with grpc.insecure_channel(url) as channel:
        rpc = channel.stream_stream(MODEL_STREAM_INFER, response_deserializer=decode_stream_response)
        call = rpc(requests, timeout=deadline_s)
        try:
            for _ in call:
                got += 1
            status = "OK"
        except grpc.RpcError as err:
            status = err.code().name
    return status, got, time.monotonic() - start


def _trickle(stop: threading.Event) -> Iterator[bytes]:
    """A one-token request every 0.2 s (more often than the idle timeout), never half-closed."""
    for i in range(100):
        if stop.wait(0.2 if i else 0):
            return
        yield encode_request("alpha", f"t-{i}", "hi", 1, stream=False, count_tokens=False)


def test_a_long_answer_is_cut_at_the_stream_duration(spec: PlatformSpec) -> None:
    """~3 s of tokens, one every few ms: cut at LIMIT_S; the client's longer grpc-timeout
    (30 s) does not lift the bound."""
    request = encode_request("alpha", "long", "tell me everything", 250, stream=True, count_tokens=False)
    status, got, took = _stream(f"127.0.0.1:{spec.envoy.listen_port}", iter((request,)), 30.0)
    assert status in CUT and got > 10, (status, got)
    assert LIMIT_S - 0.1 <= took < LIMIT_S + 1.0, took


def test_a_trickling_client_is_cut_at_the_stream_duration(spec: PlatformSpec) -> None:
    """The attack: a client that keeps its stream busy holds it (and a replica slot) only
    LIMIT_S, and its answers flowed until then."""
    stop = threading.Event()
    try:
        status, got, took = _stream(f"127.0.0.1:{spec.envoy.listen_port}", _trickle(stop), None)
    finally:
        stop.set()
    assert status in CUT and got >= 3, (status, got)
    assert LIMIT_S - 0.1 <= took < LIMIT_S + 1.0, took


def test_slow_headers_get_408_and_the_connection_closes(spec: PlatformSpec) -> None:
    """A request whose headers trickle in (HTTP/1.1 here; the timer is the connection
    manager's, for every codec) is answered 408 ``envoy.request_headers_timeout_s`` after
    its first byte, and its connection closed."""
    start, data = time.monotonic(), b""
    with socket.create_connection(("127.0.0.1", spec.envoy.listen_port), timeout=HEADERS_S + 3) as s:
        for line in (b"POST /x HTTP/1.1\r\n", b"host: a\r\n", b"x-slow: 1\r\n"):
            s.sendall(line)
            time.sleep(0.2)
        while b"\r\n\r\n" not in data and (chunk := s.recv(4096)):
            data += chunk
        took = time.monotonic() - start
        assert b"connection: close" in data.lower()
    assert data.startswith(b"HTTP/1.1 408"), data[:100]
    assert HEADERS_S - 0.1 <= took < HEADERS_S + 1.0, took
