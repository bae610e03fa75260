"""Security controls with real certificates, the real Envoy and tritonclient.

Stack ``secured``: xDS over mTLS, listener mTLS, upstream mTLS to a real replica
(``tritonserver`` serving gRPC over TLS) that requires Envoy's client certificate, API
keys (file + env) with per-client token buckets, and a request size limit. Stack
``tls_only``: listener TLS without client certificates and no authentication. All on
127.0.0.1, free ports. Every request is one request on one ModelStreamInfer stream,
sent with tritonclient's stream API (Triton serves no unary inference for the
decoupled vLLM model).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from sec_pki import Pki, make_pki
from sec_stack import MODEL, SecureStack, admin_get, start_stack
from tritonclient.utils import InferenceServerException

from caravan.local.process import free_port
from caravan.spec import PlatformSpec, parse_spec
from caravan.xds.security import too_large_message

pytestmark = pytest.mark.integration

KEYS = {"alice": "alice-key-0123456789abcdef", "slow": "slow-key-0123456789abcdef"}
CAROL_VAR = "CARAVAN_TEST_KEY_CAROL"
CAROL_KEY = "carol-key-0123456789abcdef"
MAX_BYTES = 64 * 1024


def _base(tmp: Path, security: dict[str, Any]) -> PlatformSpec:
    return parse_spec({
        "models": [{"name": MODEL, "engine": {"model": "m/alpha"},
                    "routing": {"maglev_table_size": 1031, "retries": 0}}],
        "envoy": {"listen_port": free_port(), "admin_port": free_port()},
        "control_plane": {"xds_port": free_port(), "admin_port": free_port(),
                          "debounce_quiet_ms": 10, "debounce_max_ms": 100},
        "security": security,
    })


def _secured_spec(tmp: Path, pki: Pki) -> PlatformSpec:
    keys = tmp / "api-keys.txt"
    keys.write_text("# client: key\n" + "".join(f"{c}: {k}\n" for c, k in KEYS.items()))
    return _base(tmp, {
        "listener_tls": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key),
                         "client_ca_file": str(pki.ca)},
        "upstream_tls": {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert),
                         "key_file": str(pki.client_key), "sni": "replica.caravan"},
        "xds_tls": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key),
                    "ca_file": str(pki.ca), "client_ca_file": str(pki.ca),
                    "client_cert_file": str(pki.client_cert),
                    "client_key_file": str(pki.client_key)},
        "api_keys": {"file": str(keys), "env": {"carol": CAROL_VAR},
                     "rate_limit": {"requests_per_s": 200, "burst": 200},
                     "client_limits": {"slow": {"requests_per_s": 0.1, "burst": 2}}},
        "max_request_bytes": MAX_BYTES,
    })


@dataclass
class Secured:
    stack: SecureStack
    pki: Pki


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    tmp = tmp_path_factory.mktemp("sec-full")
    pki = make_pki(tmp / "pki")
    env = {**os.environ, CAROL_VAR: CAROL_KEY}
    stack = start_stack(tmp, _secured_spec(tmp, pki), pki, 1, mtls_replicas=True, env=env)
    try:
        yield Secured(stack, pki)
    finally:
        stack.close()


@pytest.fixture(scope="module")
def tls_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SecureStack, Pki]]:
    tmp = tmp_path_factory.mktemp("sec-tls")
    pki = make_pki(tmp / "pki")
    spec = _base(tmp, {"listener_tls": {"cert_file": str(pki.server_cert),
                                        "key_file": str(pki.server_key)}})
    stack = start_stack(tmp, spec, None, 1, mtls_replicas=False)
    try:
        yield stack, pki
    finally:
        stack.close()


def _inputs(text: str = "hi", stream: bool = False) -> list[grpcclient.InferInput]:
    def t(name: str, dtype: str, value: Any) -> grpcclient.InferInput:
        x = grpcclient.InferInput(name, [1], dtype)
        x.set_data_from_numpy(np.array([value], dtype=np.object_ if dtype == "BYTES" else bool))
        return x

    return [t("text_input", "BYTES", text.encode()),
            t("sampling_parameters", "BYTES", json.dumps({"max_tokens": 4}).encode()),
            t("stream", "BOOL", stream)]


def _client(url: str, pki: Pki | None, cert: str = "client") -> grpcclient.InferenceServerClient:
    if pki is None:
        return grpcclient.InferenceServerClient(url)
    chain = {"client": (pki.client_cert, pki.client_key), "rogue": (pki.rogue_cert, pki.rogue_key)}
    if cert == "none":
        return grpcclient.InferenceServerClient(url, ssl=True, root_certificates=str(pki.ca))
    crt, key = chain[cert]
    return grpcclient.InferenceServerClient(
        url, ssl=True, root_certificates=str(pki.ca), private_key=str(key),
        certificate_chain=str(crt),
    )


def _stream_once(url: str, pki: Pki | None, text: str, *, key: str | None = KEYS["alice"],
                 cert: str = "client", stream: bool = True,
                 headers: dict[str, str] | None = None) -> object:
    """One request over a bidi stream (tritonclient's stream API); the first thing the
    callback gets (a result or an InferenceServerException), waiting at most 10 s."""
    got: queue.Queue[object] = queue.Queue()
    sent = dict(headers or {})
    if key is not None:
        sent["x-api-key"] = key
    with _client(url, pki, cert) as c:
        c.start_stream(lambda result, error: got.put(error or result), headers=sent, stream_timeout=10)
        # the stream may fail before the request is queued: the callback has why
        with contextlib.suppress(InferenceServerException):
            c.async_stream_infer(MODEL, _inputs(text, stream=stream), request_id="r")
        try:
            item = got.get(timeout=10)
        finally:
            c.stop_stream()
    return item


def _status(item: object) -> tuple[str, str]:
    """(status name, message) of what ``_stream_once`` got: "OK" for a final answer with
    text, the gRPC status of a failed stream, "STREAM_ERROR" for an in-stream error."""
    if isinstance(item, InferenceServerException):
        status = item.status()
        return (str(status).removeprefix("StatusCode.") if status else "STREAM_ERROR"), str(item.message())
    assert isinstance(item, grpcclient.InferResult)
    assert item.get_response().parameters["triton_final_response"].bool_param
    assert item.as_numpy("text_output") is not None
    return "OK", ""


def _infer(url: str, pki: Pki | None, key: str | None, cert: str = "client",
           text: str = "hi", headers: dict[str, str] | None = None) -> tuple[str, str]:
    """One stream=false request; (status name, message); status "OK" on success."""
    return _status(_stream_once(url, pki, text, key=key, cert=cert, stream=False, headers=headers))


# --------------------------------------------------------------------------- TLS


def test_tls_listener_serves_tritonclient_and_refuses_plaintext(
    tls_only: tuple[SecureStack, Pki],
) -> None:
    stack, pki = tls_only
    assert _infer(stack.url, pki, None, cert="none") == ("OK", "")
    status, _ = _infer(stack.url, None, None)
    assert status == "UNAVAILABLE"


def test_mtls_listener_refuses_clients_without_a_trusted_certificate(secured: Secured) -> None:
    s = secured
    assert _infer(s.stack.url, s.pki, KEYS["alice"]) == ("OK", "")
    for cert in ("none", "rogue"):
        status, _ = _infer(s.stack.url, s.pki, KEYS["alice"], cert=cert)
        assert status == "UNAVAILABLE", cert
    assert _infer(s.stack.url, None, KEYS["alice"])[0] == "UNAVAILABLE"


def _stat(admin: int, name: str) -> int:
    for line in admin_get(admin, f"/stats?filter=^{name}$").splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    raise KeyError(name)


def test_upstream_mtls_and_tls_health_checks(secured: Secured) -> None:
    """The replica only accepts clients with a CA-signed cert, yet requests and the
    gRPC health checks (host is healthy) get through over TLS."""
    admin = secured.stack.spec.envoy.admin_port
    assert _infer(secured.stack.url, secured.pki, KEYS["alice"])[0] == "OK"
    assert _stat(admin, f"cluster.model-{MODEL}.ssl.handshake") >= 1
    assert _stat(admin, f"cluster.model-{MODEL}.health_check.success") >= 1
    port = int(secured.stack.cp.cp.snapshot_json()["eds"]["resources"][f"model-{MODEL}"]
               ["resource"]["endpoints"][0]["lbEndpoints"][0]["endpoint"]["address"]
               ["socketAddress"]["portValue"])
    assert port in secured.stack.replica_ports
    assert _infer(f"127.0.0.1:{port}", None, None)[0] == "UNAVAILABLE", "replica took plaintext"
    assert _infer(f"127.0.0.1:{port}", secured.pki, None, cert="none")[0] == "UNAVAILABLE"


def test_xds_over_mtls(secured: Secured) -> None:
    """Envoy got its config from the TLS-only ADS port, with its client certificate."""
    admin = secured.stack.spec.envoy.admin_port
    assert _stat(admin, "cluster.xds_cluster.ssl.handshake") >= 1
    assert secured.stack.cp.cp.clients_json(), "no Envoy connected to the control plane"
    with grpc.insecure_channel(f"127.0.0.1:{secured.stack.cp.cp.port}") as ch:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with pytest.raises(grpc.RpcError) as err:
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=3)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


# --------------------------------------------------------------------------- API keys


@pytest.mark.parametrize(
    ("key", "expected"),
    [(None, "UNAUTHENTICATED"), ("wrong-key-0123456789abcdef", "UNAUTHENTICATED"),
     (KEYS["alice"], "OK"), (CAROL_KEY, "OK")],
    ids=["missing-key", "invalid-key", "file-key", "env-key"],
)
def test_api_keys(secured: Secured, key: str | None, expected: str) -> None:
    assert _infer(secured.stack.url, secured.pki, key)[0] == expected


def test_spoofed_client_header_does_not_bypass_auth(secured: Secured) -> None:
    status, _ = _infer(secured.stack.url, secured.pki, None, headers={"x-caravan-client": "alice"})
    assert status == "UNAUTHENTICATED"


def test_per_key_rate_limit(secured: Secured) -> None:
    """``slow`` has a burst of 2 at 0.1 req/s: the 3rd quick request is refused with
    RESOURCE_EXHAUSTED; alice (200 req/s) is unaffected meanwhile."""
    url, pki = secured.stack.url, secured.pki
    got = [_infer(url, pki, KEYS["slow"])[0] for _ in range(4)]
    assert got[:2] == ["OK", "OK"], got
    assert got[2:] == ["RESOURCE_EXHAUSTED"] * 2, got
    assert [_infer(url, pki, KEYS["alice"])[0] for _ in range(3)] == ["OK"] * 3


# --------------------------------------------------------------------------- size limit


def _too_large(got: tuple[str, str]) -> bool:
    # Envoy replies grpc-status UNKNOWN with the size message and resets the stream;
    # depending on which the client reads first it reports that or INTERNAL (RST_STREAM).
    return got == ("UNKNOWN", too_large_message(MAX_BYTES)) or (got[0] == "INTERNAL" and "RST_STREAM" in got[1])


def test_oversize_request_refused_others_unaffected(secured: Secured) -> None:
    """A stream=false request above ``max_request_bytes`` is refused by Envoy with its
    size message; one below the limit is served."""
    url, pki = secured.stack.url, secured.pki
    got = _infer(url, pki, KEYS["alice"], text="x" * (2 * MAX_BYTES))
    assert _too_large(got), got
    assert _infer(url, pki, KEYS["alice"], text="y" * (MAX_BYTES // 2))[0] == "OK"


def test_oversize_stream_message_refused_not_hung(secured: Secured) -> None:
    """On a stream Envoy has already opened upstream, the oversize body is refused at
    once (not a hang), and the next stream is served."""
    url, pki = secured.stack.url, secured.pki
    t0 = time.monotonic()
    item = _stream_once(url, pki, "z" * (2 * MAX_BYTES))
    assert time.monotonic() - t0 < 5
    assert isinstance(item, InferenceServerException), item
    got = (str(item.status()).removeprefix("StatusCode."), str(item.message()))
    assert _too_large(got), got
    ok = _stream_once(url, pki, "fine")
    assert not isinstance(ok, InferenceServerException), ok


# --------------------------------------------------------------------------- bench client


@pytest.mark.parametrize(("with_key", "ok"), [(True, 3), (False, 0)], ids=["api-key", "no-key"])
def test_caravan_bench_against_the_secured_endpoint(
    secured: Secured, tmp_path: Path, with_key: bool, ok: int
) -> None:
    """`caravan bench --tls-ca --tls-cert --tls-key --api-key-file` measures the mTLS +
    API-key endpoint; without the key every request is UNAUTHENTICATED (exit 1)."""
    import subprocess

    from caravan.local.process import caravan_argv

    key_file = tmp_path / "key"
    key_file.write_text(KEYS["alice"] + "\n")
    pki = secured.pki
    argv = caravan_argv(
        "bench", "--url", secured.stack.url, "--model", MODEL, "--concurrency", "1",
        "--requests", "3", "--output-tokens", "4", "--no-plot", "--no-progress",
        "--tls-ca", str(pki.ca), "--tls-cert", str(pki.client_cert),
        "--tls-key", str(pki.client_key), "--out", str(tmp_path / "out"),
    )
    if with_key:
        argv += ["--api-key-file", str(key_file)]
    env = {k: v for k, v in os.environ.items() if k != "CARAVAN_API_KEY"}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert proc.returncode == (0 if ok else 1), proc.stderr[-2000:]
    records = json.loads((tmp_path / "out" / "bench.json").read_text())
    got = [(r["status"], r["error"]) for lv in records["levels"] for r in lv["records"]]
    if ok:
        assert [s for s, _ in got] == ["OK"] * 3, got
    else:
        # Envoy answers every keyless stream with grpc-status 16, before reading it;
        # the bench reports that status, never grpc's own INTERNAL (grpc/grpc#36066).
        assert got == [("UNAUTHENTICATED", "Client authentication failed.")] * 3, got
    assert KEYS["alice"] not in (tmp_path / "out" / "bench.json").read_text()
    assert KEYS["alice"] not in proc.stdout + proc.stderr
