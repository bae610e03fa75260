"""The Triton job's command line run by the real ``tritonserver`` (2.51, nvidia-pytriton wheel).

The job's own arguments (``triton_job.tritonserver_args``) with the container's paths moved
under a temporary task directory (``/secrets/x`` -> ``<task>/secrets/x``, where the job's
templates write) and the ports on 127.0.0.1. The model directory holds the job's rendered
config.pbtxt with ``backend: "python"`` instead of ``"vllm"`` (no vLLM here) and a model.py
that does what the vLLM backend does when its engine is dead (vllm_backend ``src/model.py``
``_check_health``): read ``ENABLE_VLLM_HEALTH_CHECK`` from the config, fail the request
UNAVAILABLE and ``pb_utils.unload_model`` itself. Shows, on the real binary:

* every flag of the job is accepted; gRPC, metrics and (loopback) HTTP listen;
* with upstream mTLS, grpc.health.v1 over TLS with a client certificate answers SERVING
  (what a Consul agent with ``enable_agent_tls_for_checks`` sends); no certificate, a
  certificate from another CA, or plaintext: refused. Server-only TLS needs no certificate;
* a dead engine: the request fails and the model is unloaded. grpc.health.v1 is server
  readiness: NOT_SERVING only while the unload runs, SERVING again afterwards (core
  ``InferenceServer::IsReady`` accepts a model "not ready due to unload"). The job's
  model-ready script check (run here as Nomad would, with this interpreter as
  ``python3``) exits 0 before and 2 (critical) after: that is the check whose
  check_restart makes Nomad restart the task.
"""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tests.integration.security.sec_pki import Pki, make_pki

from caravan.nomad import triton_job
from caravan.render import triton
from caravan.spec import PlatformSpec, parse_spec

pytestmark = pytest.mark.integration

try:
    import pytriton

    TRITON = Path(pytriton.__file__).parent / "tritonserver"
except ImportError:  # pragma: no cover - the wheel is a dev dependency
    TRITON = Path("/nonexistent")
STUB = TRITON / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}"
if not (TRITON / "bin" / "tritonserver").exists() or not STUB.exists():  # pragma: no cover
    pytest.skip("needs nvidia-pytriton's tritonserver", allow_module_level=True)

MODEL_PY = '''"""A vLLM backend whose engine is dead (test stand-in)."""
import json

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        self.name = args["model_name"]
        self.health_check = (
            params.get("ENABLE_VLLM_HEALTH_CHECK", {}).get("string_value", "").lower() == "true")

    def execute(self, requests):
        if self.health_check:  # vllm_backend src/model.py _check_health
            pb_utils.unload_model(self.name)
        for request in requests:
            request.get_response_sender().send(
                pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    "Model is unavailable due to unhealthy vLLM engine",
                    pb_utils.TritonError.UNAVAILABLE)),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
'''
MODEL = {"name": "tiny", "engine": {"model": "m"}}


def _spec(tls: dict[str, str], **security: Any) -> PlatformSpec:
    return parse_spec({"models": [MODEL], "security": {"upstream_tls": tls, **security}})


XDS_MTLS = {"cert_file": "x", "key_file": "x", "ca_file": "x", "client_ca_file": "x",
            "client_cert_file": "x", "client_key_file": "x"}
# Envoy's side only names files; the replica's PEMs come from the Nomad Variable. With
# client authentication (API keys here) validation requires this mutual TLS.
MTLS = _spec({"ca_file": "/envoy/ca.pem", "cert_file": "/envoy/c.pem", "key_file": "/envoy/c.key"},
             api_keys={"file": "/keys"}, xds_tls=XDS_MTLS)
TLS = _spec({"ca_file": "/envoy/ca.pem"})


@dataclass
class Server:
    grpc_port: int
    metrics_port: int
    http_port: int
    pki: Pki
    log: Path
    proc: subprocess.Popen[bytes]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _backends(root: Path) -> Path:
    python = root / "backends" / "python"
    python.mkdir(parents=True)
    for name, target in {
        "libtriton_python.so": TRITON / "backends" / "python" / "libtriton_python.so",
        "triton_python_backend_utils.py": TRITON / "backends" / "python" / "triton_python_backend_utils.py",
        "triton_python_backend_stub": STUB / "triton_python_backend_stub",
    }.items():
        (python / name).symlink_to(target)
    return root / "backends"


def _start(spec: PlatformSpec, tmp: Path) -> Server:
    model = spec.models[0]
    job = triton_job.triton_job(spec, model)
    (task,) = job.groups[0].tasks
    task_dir = tmp / "task"
    pki = make_pki(tmp / "pki")
    # What Nomad writes: the model repository as is (backend swapped), the PEMs from the variable.
    pem = {"tls_cert": pki.server_cert, "tls_key": pki.server_key, "tls_client_ca": pki.ca}
    for tpl in task.templates:
        dest = task_dir / tpl.destination
        dest.parent.mkdir(parents=True, exist_ok=True)
        if tpl.destination.endswith("config.pbtxt"):
            assert "{{" not in tpl.data and 'backend: "vllm"' in tpl.data
            dest.write_text(tpl.data.replace('backend: "vllm"', 'backend: "python"'))
            (dest.parent / "1" / "model.py").parent.mkdir(exist_ok=True)
            (dest.parent / "1" / "model.py").write_text(MODEL_PY)
        for item, dst in triton_job.TLS_FILES.items():
            if tpl.destination == dst:
                dest.write_bytes(pem[item].read_bytes())
    grpc_port, metrics_port, http_port = _free_port(), _free_port(), _free_port()

    def local(arg: str) -> str:
        name, _, value = arg.partition("=")
        if value.startswith(("/local/", "/secrets/")):
            return f"{name}={task_dir}{value}"
        return {"--grpc-address": f"{name}=127.0.0.1", "--metrics-address": f"{name}=127.0.0.1",
                "--grpc-port": f"{name}={grpc_port}", "--metrics-port": f"{name}={metrics_port}",
                "--http-port": f"{name}={http_port}",
                "--exit-timeout-secs": f"{name}=5"}.get(name, arg)

    argv = [str(TRITON / "bin" / "tritonserver"), *(local(a) for a in task.config.args),
            f"--backend-directory={_backends(tmp)}"]
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(TRITON.parent.parent / "nvidia_pytriton.libs"), env.get("LD_LIBRARY_PATH")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    log = tmp / "tritonserver.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Server(grpc_port, metrics_port, http_port, pki, log, proc)


def _model_ready(server: Server) -> int:
    """Run the job's model-ready script check as Nomad does (``python3 -c ...``)."""
    model = MTLS.models[0]
    (_, check) = triton_job.triton_job(MTLS, model).groups[0].services[0].checks
    assert check.command == "python3" and check.args[0] == "-c"
    script = check.args[1].replace(f":{triton_job.HTTP_PORT}/", f":{server.http_port}/")
    assert script != check.args[1]
    return subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=30).returncode


def _stop(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(30)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(10)


def _creds(pki: Pki, client: tuple[Path, Path] | None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=None if client is None else client[1].read_bytes(),
        certificate_chain=None if client is None else client[0].read_bytes())


def _health(server: Server, creds: grpc.ChannelCredentials | None) -> Any:
    target = f"127.0.0.1:{server.grpc_port}"
    channel = grpc.insecure_channel(target) if creds is None else grpc.secure_channel(target, creds)
    with channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3).status


def _wait_serving(server: Server, creds: grpc.ChannelCredentials) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"tritonserver exited {server.proc.returncode}:\n{server.log.read_text()[-3000:]}")
        try:
            if _health(server, creds) == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    pytest.fail(f"tritonserver not SERVING after 90 s:\n{server.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = _start(MTLS, tmp_path_factory.mktemp("mtls"))
    try:
        _wait_serving(server, _creds(server.pki, (server.pki.client_cert, server.pki.client_key)))
        yield server
    finally:
        _stop(server)


def _refused(server: Server, creds: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        _health(server, creds)
    code: grpc.StatusCode = info.value.code()
    return code


def test_mtls_health_needs_a_client_certificate_from_the_trusted_ca(mtls_server: Server) -> None:
    pki = mtls_server.pki
    assert _health(mtls_server, _creds(pki, (pki.client_cert, pki.client_key))) == \
        health_pb2.HealthCheckResponse.SERVING
    assert _refused(mtls_server, _creds(pki, None)) == grpc.StatusCode.UNAVAILABLE
    assert _refused(mtls_server, _creds(pki, (pki.rogue_cert, pki.rogue_key))) == \
        grpc.StatusCode.UNAVAILABLE
    assert _refused(mtls_server, None) == grpc.StatusCode.UNAVAILABLE  # plaintext


def test_inference_without_envoys_certificate_is_refused(mtls_server: Server) -> None:
    """What a client that skips Envoy gets from a replica of a client-auth spec."""
    from caravan.bench.wire import MODEL_STREAM_INFER, decode_stream_response, encode_request

    pki, target = mtls_server.pki, f"127.0.0.1:{mtls_server.grpc_port}"
    request = encode_request(MODEL["name"], "direct-1", "hi", 4, stream=False, count_tokens=False)
    for channel in (grpc.insecure_channel(target), grpc.secure_channel(target, _creds(pki, None)),
                    grpc.secure_channel(target, _creds(pki, (pki.rogue_cert, pki.rogue_key)))):
        with channel, pytest.raises(grpc.RpcError) as info:
            rpc = channel.stream_stream(MODEL_STREAM_INFER, response_deserializer=decode_stream_response)
            list(rpc(iter((request,)), timeout=5))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_metrics_served_and_http_only_on_loopback(mtls_server: Server) -> None:
    url = f"http://127.0.0.1:{mtls_server.metrics_port}/metrics"
    deadline = time.monotonic() + 20  # tritonserver starts metrics just after gRPC
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                assert resp.status == 200 and b"nv_" in resp.read()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    log = mtls_server.log.read_text()
    assert "Started GRPCInferenceService" in log and "Started Metrics Service" in log
    assert f"Started HTTPService at 127.0.0.1:{mtls_server.http_port}" in log


def test_dead_engine_unloads_the_model_and_the_model_ready_check_turns_critical(
        mtls_server: Server) -> None:
    import numpy as np
    import tritonclient.grpc as tc

    deadline = time.monotonic() + 20  # HTTP starts just after gRPC
    while _model_ready(mtls_server) != 0:
        assert time.monotonic() < deadline, "model-ready check never passed"
        time.sleep(0.2)
    pki = mtls_server.pki
    client = tc.InferenceServerClient(
        f"127.0.0.1:{mtls_server.grpc_port}", ssl=True, root_certificates=str(pki.ca),
        private_key=str(pki.client_key), certificate_chain=str(pki.client_cert))
    answers: queue.Queue[Any] = queue.Queue()
    text = tc.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"hello"], dtype=object))
    client.start_stream(callback=lambda result, error: answers.put(error))
    try:
        client.async_stream_infer(MODEL["name"], [text])
        error = answers.get(timeout=30)
    finally:
        client.stop_stream()
        client.close()
    assert error is not None and "unhealthy vLLM engine" in str(error)
    creds = _creds(pki, (pki.client_cert, pki.client_key))
    unloaded = f"successfully unloaded '{MODEL['name']}'"
    deadline = time.monotonic() + 60
    seen: set[int] = set()  # NOT_SERVING shows only while the unload runs, if we poll then
    while unloaded not in mtls_server.log.read_text() and time.monotonic() < deadline:
        seen.add(_health(mtls_server, creds))
        time.sleep(0.1)
    assert unloaded in mtls_server.log.read_text()
    assert seen <= {health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING}
    # Unloaded: the server is "ready" again with no model (why the job has a model check).
    assert _health(mtls_server, creds) == health_pb2.HealthCheckResponse.SERVING
    assert _model_ready(mtls_server) == 2  # critical, and stays so until Nomad restarts the task


def test_server_only_tls_needs_no_client_certificate(tmp_path: Path) -> None:
    server = _start(TLS, tmp_path)
    try:
        _wait_serving(server, _creds(server.pki, None))
        assert _refused(server, None) == grpc.StatusCode.UNAVAILABLE  # plaintext
    finally:
        _stop(server)


def test_the_rendered_config_is_what_the_stand_in_reads() -> None:
    text = triton.config_pbtxt(MTLS.models[0])
    assert 'key: "ENABLE_VLLM_HEALTH_CHECK"\n  value: { string_value: "true" }' in text
