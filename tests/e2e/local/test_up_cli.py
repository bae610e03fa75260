"""`caravan up` as a real process, with a JWT-secured spec (xDS mTLS and replicas that
accept only Envoy, backed by the stack's local PKI; its readiness probe signs its own
token): it starts and serves a client's token signed by the spec's own key, not a
request without one; a second `caravan up` on the same state directory exits 1 naming
the first's PID; SIGKILL of the first leaves none of its children (replicas with their
Python backend stubs, control plane, Envoy) running: they get SIGTERM from the kernel
(PR_SET_PDEATHSIG) and exit within seconds."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from caravan.local.health import infer_once
from caravan.local.process import descendants, free_port, wait_until
from caravan.local.statelock import LOCK_FILE


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


ISSUER, AUDIENCE = "https://issuer.caravan.test", "caravan-api"
NOWHERE = "/nonexistent/caravan"  # production paths: replaced by the local PKI


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def write_jwks(key: rsa.RSAPrivateKey, path: Path) -> Path:
    pub = key.public_key().public_numbers()
    n, e = (b64(v.to_bytes((v.bit_length() + 7) // 8, "big")) for v in (pub.n, pub.e))
    path.write_text(json.dumps({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "n": n, "e": e}]}))
    return path


def token(key: rsa.RSAPrivateKey) -> str:
    now = int(time.time())
    head = b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "k1"}).encode())
    body = b64(json.dumps({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now + 300}).encode())
    sig = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{head}.{body}.{b64(sig)}"


def security(jwks: Path) -> dict[str, object]:
    tls = {"cert_file": f"{NOWHERE}/x.pem", "key_file": f"{NOWHERE}/x.key", "ca_file": f"{NOWHERE}/ca.pem"}
    return {
        "jwt": {"issuer": ISSUER, "audiences": [AUDIENCE], "jwks_file": str(jwks)},
        "xds_tls": {**tls, "client_ca_file": f"{NOWHERE}/ca.pem", "client_cert_file": f"{NOWHERE}/e.pem",
                    "client_key_file": f"{NOWHERE}/e.key"},
        "upstream_tls": {"ca_file": f"{NOWHERE}/ca.pem", "cert_file": f"{NOWHERE}/e.pem",
                         "key_file": f"{NOWHERE}/e.key"},
    }


def up(spec: Path) -> list[str]:
    return [sys.executable, "-m", "caravan", "up", str(spec), "--no-prometheus"]


def test_second_up_refuses_and_sigkilled_up_leaves_no_child(tmp_path: Path) -> None:
    listen, state = free_port(), tmp_path / "state"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bearer = (("authorization", f"Bearer {token(key)}"),)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "models": [{"name": "tiny", "engine": {"model": "t"}, "replicas": {"min": 1, "initial": 2, "max": 2}}],
        "envoy": {"listen_port": listen, "admin_port": free_port()},
        "control_plane": {"xds_port": free_port(), "admin_port": free_port()},
        "local": {"time_scale": 0.01, "prometheus_port": free_port(), "state_dir": str(state)},
        "security": security(write_jwks(key, tmp_path / "jwks.json")),
    }))
    out = tmp_path / "up.out"
    with out.open("w") as sink:
        first = subprocess.Popen(up(spec), stdout=sink, stderr=subprocess.STDOUT)
    try:
        # its banner comes after its own probe (a token it signs) got through Envoy
        wait_until(lambda: first.poll() is None and "Caravan is serving" in out.read_text(), 90,
                   "the first caravan up serving", every_s=0.5)
        assert infer_once(f"127.0.0.1:{listen}", "tiny", metadata=bearer)
        assert not infer_once(f"127.0.0.1:{listen}", "tiny")  # no token
        assert (state / LOCK_FILE).read_text().strip() == str(first.pid)
        second = subprocess.run(up(spec), capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert f"(PID {first.pid})" in " ".join((second.stdout + second.stderr).split())
        assert infer_once(f"127.0.0.1:{listen}", "tiny", metadata=bearer)  # the first one is untouched
        family = descendants(first.pid)[1:]
        assert len(family) >= 6  # xds, envoy, 2 tritonservers and their 2 stubs
        first.send_signal(signal.SIGKILL)
        first.wait(5)
        for pid in family:
            wait_until(lambda pid=pid: gone(pid), 10, f"child {pid} of the SIGKILLed caravan up gone")
    finally:
        first.kill()
        first.wait(5)
