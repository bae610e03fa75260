"""Conformance under failure (docs/triton-contract.md): a dead engine with and without
the vLLM health check, SIGTERM, SIGKILL, slow and failed model loads. Each scenario
starts its own replica (real tritonserver 2.51 + Caravan's model); the fault file is the
local stimulus that kills the simulated engine while the process lives (never asserted
as vLLM behaviour itself).
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from triton_conformance import (
    ERR,
    MODEL,
    Answer,
    OpenStream,
    Replica,
    infer_request,
    model_infer_error,
    one,
    scrape,
    wait_for,
)
from tritonclient.grpc import service_pb2, service_pb2_grpc

from caravan.local.health import model_ready
from caravan.local.process import port_open
from caravan.triton.launcher import ReplicaOptions
from caravan.triton.settings import SETTINGS_FILE

pytestmark = pytest.mark.integration

Start = Callable[..., AbstractContextManager[Replica]]
UNHEALTHY = "Model is unavailable due to unhealthy vLLM engine"
NO_VERSIONS = f"Request for unknown model: '{MODEL}' has no available versions"
FAST = ReplicaOptions(time_scale=0.05, stream_interval_ms=10.0, exit_timeout_s=10)


def _rpc(call: Callable[[service_pb2_grpc.GRPCInferenceServiceStub], object], endpoint: str) -> object:
    """The reply of ``call`` on a fresh channel, or the RpcError it raised."""
    with grpc.insecure_channel(endpoint) as channel:
        try:
            return call(service_pb2_grpc.GRPCInferenceServiceStub(channel))
        except grpc.RpcError as exc:
            return exc


def _model_ready(endpoint: str) -> object:
    return _rpc(lambda s: s.ModelReady(service_pb2.ModelReadyRequest(name=MODEL), timeout=5).ready, endpoint)


def _server_ready(endpoint: str) -> object:
    return _rpc(lambda s: s.ServerReady(service_pb2.ServerReadyRequest(), timeout=5).ready, endpoint)


def _health(endpoint: str) -> object:
    with grpc.insecure_channel(endpoint) as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
        except grpc.RpcError as exc:
            return exc


def _unavailable(result: object, details: str) -> bool:
    return (isinstance(result, grpc.RpcError) and result.code() == grpc.StatusCode.UNAVAILABLE
            and result.details() == details)


def _long_stream(s: OpenStream, tokens: int, **flags: bool) -> Answer:
    """Start a long streaming request on ``s``; its first (non-final) answer."""
    s.send(infer_request("tell me a very long story", rid="long", stream=True, sampling={"max_tokens": tokens},
                         flags={"return_num_output_tokens": True, **flags}))
    first = s.get()
    assert isinstance(first, Answer) and not first.error and first.final is False, first
    return first


def _error_answer(s: OpenStream) -> Answer:
    """Read ``s`` up to its first error answer (data answers before it are allowed)."""
    for answer in s.until_final(timeout_s=10):
        if answer.error:
            return answer
    raise AssertionError("the request ended without an error")


def test_c32_c5_c9_c34_dead_engine_with_health_check_unloads_the_model(start_replica: Start) -> None:
    with start_replica(FAST) as r:
        assert one(r.endpoint, infer_request(sampling={"max_tokens": 2}))[-1].final is True
        with OpenStream(r.endpoint) as s:
            _long_stream(s, 3000)
            r.plan.fault_file.touch()
            inflight = _error_answer(s)  # C32: requests in flight fail as C27
        assert inflight.error.startswith(ERR) and inflight.final is True
        # The check runs only when a request arrives: the idle replica still looks healthy.
        assert _model_ready(r.endpoint) is True and _health(r.endpoint) == "SERVING"

        (refused,) = one(r.endpoint, infer_request(rid="after"))
        assert (refused.error, refused.final, refused.outputs) == (UNHEALTHY, True, {})
        assert "[vllm] Engine is not healthy and model will be unloaded" in r.log_text()

        wait_for(lambda: _model_ready(r.endpoint) is False, "ModelReady false after the unload")
        # C5: strict readiness ignores the unloaded model: ready and SERVING again.
        wait_for(lambda: _server_ready(r.endpoint) is True and _health(r.endpoint) == "SERVING",
                 "ServerReady true and SERVING once the unload is done")
        assert _model_ready(r.endpoint) is False

        (gone,) = one(r.endpoint, infer_request(rid="gone"))  # C9
        assert (gone.error, gone.final) == (NO_VERSIONS, None)
        exc = model_infer_error(r.endpoint, MODEL)
        assert (exc.status(), exc.message()) == ("StatusCode.NOT_FOUND", NO_VERSIONS)
        (pinned,) = one(r.endpoint, infer_request(rid="v1", version="1"))
        assert pinned.error == f"Request for unknown model: '{MODEL}' version 1 is not at ready state"
        # C34: the model's nv_inference_* series are gone with it, except (observed on
        # 2.51) the failure counters, which stay with their last values.
        series = scrape(r.plan.metrics_port).samples
        left = {n for n, lab, _ in series if n.startswith("nv_inference_") and lab.get("model") == MODEL}
        assert left == {"nv_inference_request_failure"}


def _health_check_off(state_dir: Path) -> None:
    config = state_dir / "models" / MODEL / "config.pbtxt"
    text, n = re.subn(r'(key: "ENABLE_VLLM_HEALTH_CHECK"\s*value: \{ string_value: )"true"', r'\1"false"',
                      config.read_text())
    assert n == 1, text
    config.write_text(text)


def test_c33_dead_engine_without_health_check_stays_loaded(start_replica: Start) -> None:
    with start_replica(FAST, edit=_health_check_off) as r:
        with OpenStream(r.endpoint) as s:
            _long_stream(s, 3000)
            r.plan.fault_file.touch()
            inflight = _error_answer(s)
        assert inflight.error.startswith(ERR) and inflight.final is True
        for i in range(3):
            (later,) = one(r.endpoint, infer_request(rid=f"later-{i}"))
            assert later.error.startswith(ERR) and later.final is True, later
        assert later.error == inflight.error  # vLLM's EngineDeadError text, every time
        time.sleep(0.3)
        assert _model_ready(r.endpoint) is True and _health(r.endpoint) == "SERVING"


def test_c6_sigterm_drains_running_streams_and_refuses_new_requests(start_replica: Start) -> None:
    tokens = 1000  # ~1.3 s at time scale 0.1
    with start_replica(ReplicaOptions(time_scale=0.1, exit_timeout_s=20)) as r:
        s = OpenStream(r.endpoint)
        try:
            first = _long_stream(s, tokens)
            r.proc.signal(signal.SIGTERM)
            wait_for(lambda: _unavailable(_server_ready(r.endpoint), "Server exiting"), "ServerReady: Server exiting")
            assert _unavailable(_health(r.endpoint), "Server exiting")
            assert _unavailable(_model_ready(r.endpoint), "Server not ready")
            (refused,) = wait_for(lambda: (a := one(r.endpoint, infer_request(rid="new"))) and a[0].error and a,
                                  "a new request refused")
            assert (refused.error, refused.final) == (NO_VERSIONS, None)

            rest = s.until_final(timeout_s=15)  # the running stream completes normally
            assert all(not a.error for a in rest) and rest[-1].final is True
            total = sum(int(a.outputs["num_output_tokens"][0]) for a in [first, *rest])
            assert total == tokens
            # Observed on 2.51: while the client keeps its (now idle) stream open, the
            # unload does not complete (the model's finalize is not even called) and the
            # process lives on; it exits once the client half-closes.
            time.sleep(0.5)
            assert r.proc.alive() and f"successfully unloaded '{MODEL}'" not in r.log_text()
        finally:
            s.__exit__(None, None, None)
        wait_for(lambda: not r.proc.alive(), "tritonserver to exit after the half-close", timeout_s=15)
        assert r.proc.proc is not None and r.proc.proc.returncode == 0, r.proc.tail()
        assert f"successfully unloaded '{MODEL}'" in r.log_text()


def _stub_pids(parent: int) -> list[int]:
    """The Python backend stubs ``parent`` started (by /proc; read-only)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            out.append(int(stat.parent.name))
    return out


def test_c2_c38_ports_open_after_the_load_and_sigkill_drops_streams(start_replica: Start) -> None:
    delay = 1.5
    with start_replica(ReplicaOptions(time_scale=0.1, load_delay_s=delay), wait=False) as r:
        started = time.monotonic()
        host, port = r.plan.options.host, r.plan.grpc_port
        wait_for(lambda: port_open(host, port) or not r.proc.alive(), "the gRPC port", timeout_s=60, interval_s=0.01)
        assert r.proc.alive(), r.proc.tail()
        assert model_ready(r.endpoint, MODEL), "C2: the port opened before the model was ready"
        assert time.monotonic() - started >= delay

        stubs = _stub_pids(r.proc.pid)
        assert stubs, "no Python backend stub"
        with OpenStream(r.endpoint) as s:
            _long_stream(s, 2000)
            r.proc.signal(signal.SIGKILL)
            end = s.get(timeout_s=10)
            while isinstance(end, Answer):  # responses already on their way
                assert not end.final
                end = s.get(timeout_s=10)
        assert isinstance(end, grpc.RpcError) and end.code() == grpc.StatusCode.UNAVAILABLE, end
        assert not port_open(host, port)
        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in stubs), "the orphaned stub to exit")


def _break_settings(state_dir: Path) -> None:
    (state_dir / "models" / MODEL / "1" / SETTINGS_FILE).write_text("{ not json")


def test_c2_failed_startup_load_exits_1(start_replica: Start) -> None:
    with start_replica(FAST, edit=_break_settings, wait=False) as r:
        wait_for(lambda: not r.proc.alive(), "tritonserver to exit", timeout_s=60)
        assert r.proc.proc is not None and r.proc.proc.returncode == 1
        log = r.log_text()
        assert "error: creating server:" in log and f"load failed for model '{MODEL}'" in log, log[-2000:]
        assert not port_open(r.plan.options.host, r.plan.grpc_port)
