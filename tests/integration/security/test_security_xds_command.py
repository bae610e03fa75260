"""``caravan xds`` as a process with ``security``: ADS/health only over mTLS, API keys
loaded from a file, blanked in ``/debug/snapshot`` and absent from its logs; a bad
key file is refused with exit 2 and a message naming the line."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sec_pki import make_pki

from caravan.discovery.registry_file import write_registry
from caravan.local.launch import start_control_plane, wait_until, xds_argv
from caravan.local.process import free_port

pytestmark = pytest.mark.integration
KEY = "xds-cmd-key-0123456789abcdef"


def _spec(tmp: Path, keys_text: str) -> tuple[Path, int, int]:
    pki = make_pki(tmp / "pki")
    (tmp / "keys").write_text(keys_text)
    xds, admin = free_port(), free_port()
    spec = {
        "models": [{"name": "alpha", "engine": {"model": "m"}}],
        "control_plane": {"xds_port": xds, "admin_port": admin},
        "security": {
            "xds_tls": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key),
                        "ca_file": str(pki.ca), "client_ca_file": str(pki.ca),
                        "client_cert_file": str(pki.client_cert),
                        "client_key_file": str(pki.client_key)},
            "api_keys": {"file": str(tmp / "keys")},
            "upstream_tls": {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert),
                             "key_file": str(pki.client_key)},
        },
    }
    (tmp / "spec.yaml").write_text(yaml.safe_dump(spec))
    write_registry(tmp / "registry.json", [])
    return tmp / "spec.yaml", xds, admin


def _health(port: int, creds: grpc.ChannelCredentials | None) -> str:
    target = f"127.0.0.1:{port}"
    ch = grpc.insecure_channel(target) if creds is None else grpc.secure_channel(
        target, creds, options=[("grpc.ssl_target_name_override", "localhost")])
    with ch:
        try:
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=3)
        except grpc.RpcError as exc:
            return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(r.status))


def test_xds_command_serves_mtls_and_redacts_keys(tmp_path: Path) -> None:
    spec, xds, admin = _spec(tmp_path, f"alice: {KEY}\n")
    with start_control_plane(spec, tmp_path / "xds.log", port=xds, admin_port=admin,
                             registry=tmp_path / "registry.json") as proc:
        pki = tmp_path / "pki"
        creds = grpc.ssl_channel_credentials(
            (pki / "ca.pem").read_bytes(), (pki / "client.key").read_bytes(),
            (pki / "client.pem").read_bytes())
        wait_until(lambda: _health(xds, creds) == "SERVING", 15, "ADS health SERVING over mTLS",
                   every_s=0.1, procs=[proc])
        assert _health(xds, None) == "UNAVAILABLE", "plaintext must be refused"
        no_cert = grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes())
        assert _health(xds, no_cert) == "UNAVAILABLE", "a client without a cert must be refused"
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/debug/snapshot", timeout=3) as r:
            snapshot = r.read().decode()
        assert "alice" in snapshot and "<redacted>" in snapshot and KEY not in snapshot
        json.loads(snapshot)
        proc.stop()
    log = (tmp_path / "xds.log").read_text()
    assert "snapshot published" in log and KEY not in log


def test_xds_command_refuses_a_bad_key_file(tmp_path: Path) -> None:
    spec, xds, admin = _spec(tmp_path, f"alice: {KEY}\nbob: short-key\n")
    argv = xds_argv(spec, port=xds, admin_port=admin, registry=tmp_path / "registry.json")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2
    assert "line 2: the key of client 'bob' is shorter than 16 characters" in proc.stderr
    assert KEY not in proc.stderr + proc.stdout and "short-key" not in proc.stderr
