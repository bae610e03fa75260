"""JWT client authentication with the real Envoy (jwt_authn, inline JWKS over xDS)
and tritonclient's stream API (one request per ModelStreamInfer stream) against a real
replica (``tritonserver``): an RSA key made with ``cryptography``, RS256 tokens signed by
hand. Bad tokens of every kind get UNAUTHENTICATED; per-subject token buckets
give RESOURCE_EXHAUSTED. Plaintext listener, 127.0.0.1, free ports.
"""

from __future__ import annotations

import base64
import contextlib
import json
import queue
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sec_flood
import tritonclient.grpc as grpcclient
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sec_pki import make_pki
from sec_stack import MODEL, SecureStack, start_stack
from tritonclient.utils import InferenceServerException

from caravan.local.process import free_port
from caravan.spec import parse_spec
from caravan.xds.inference_limit import refused_message

pytestmark = pytest.mark.integration

ISSUER = "https://issuer.caravan.test"
AUDIENCE = "caravan-api"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64(n: int) -> str:
    return _b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def jwks(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    """The public JWKS of ``key`` (RS256)."""
    pub = key.public_key().public_numbers()
    return {"keys": [{"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
                      "n": _int_b64(pub.n), "e": _int_b64(pub.e)}]}


def sign(key: rsa.RSAPrivateKey, claims: dict[str, Any], kid: str = "k1",
         alg: str = "RS256") -> str:
    """A compact JWS: base64url(header).base64url(payload).base64url(RS256 signature)."""
    head = _b64(json.dumps({"alg": alg, "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(claims).encode())
    signing_input = f"{head}.{body}".encode()
    sig = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256()) if alg == "RS256" else b""
    return f"{head}.{body}.{_b64(sig)}"


def claims(sub: str | None, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    out: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}
    if sub is not None:
        out["sub"] = sub
    out.update(over)
    return {k: v for k, v in out.items() if v is not None}


class Jwt:
    def __init__(self, stack: SecureStack, key: rsa.RSAPrivateKey,
                 rogue: rsa.RSAPrivateKey) -> None:
        self.stack, self.key, self.rogue = stack, key, rogue


@pytest.fixture(scope="module")
def jwt_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jwt]:
    tmp = tmp_path_factory.mktemp("sec-jwt")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rogue = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp / "jwks.json").write_text(json.dumps(jwks(key, "k1")))
    pki = make_pki(tmp / "pki")  # JWT needs xDS mTLS and replicas that accept only Envoy
    spec = parse_spec({
        "models": [{"name": MODEL, "engine": {"model": "m/alpha"},
                    "routing": {"maglev_table_size": 1031, "retries": 0}}],
        "envoy": {"listen_port": free_port(), "admin_port": free_port()},
        "control_plane": {"xds_port": free_port(), "admin_port": free_port(),
                          "debounce_quiet_ms": 10, "debounce_max_ms": 100},
        "security": {"jwt": {
            "issuer": ISSUER, "audiences": [AUDIENCE, "other-api"],
            "jwks_file": str(tmp / "jwks.json"), "forward_payload_header": "x-jwt-payload",
            "rate_limit": {"requests_per_s": 0.1, "burst": 3},
            "subject_limits": {"vip": {"requests_per_s": 500, "burst": 500}},
        }, "xds_tls": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key),
                       "ca_file": str(pki.ca), "client_ca_file": str(pki.ca),
                       "client_cert_file": str(pki.client_cert),
                       "client_key_file": str(pki.client_key)},
            "upstream_tls": {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert),
                             "key_file": str(pki.client_key)}},
    })
    stack = start_stack(tmp, spec, pki, 1, mtls_replicas=True, env={})
    try:
        yield Jwt(stack, key, rogue)
    finally:
        stack.close()


def _inputs() -> list[grpcclient.InferInput]:
    def t(name: str, dtype: str, value: Any) -> grpcclient.InferInput:
        x = grpcclient.InferInput(name, [1], dtype)
        x.set_data_from_numpy(np.array([value], dtype=np.object_ if dtype == "BYTES" else bool))
        return x

    return [t("text_input", "BYTES", b"hi"),
            t("sampling_parameters", "BYTES", json.dumps({"max_tokens": 4}).encode()),
            t("stream", "BOOL", False)]


def infer(url: str, token: str | None, extra: dict[str, str] | None = None) -> str:
    """One stream=false request with tritonclient's stream API (one request per stream);
    its gRPC status name ("OK" on a final answer, "STREAM_ERROR" for an in-stream error)."""
    headers = dict(extra or {})
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    got: queue.Queue[object] = queue.Queue()
    with grpcclient.InferenceServerClient(url) as c:
        c.start_stream(lambda result, error: got.put(error or result), headers=headers, stream_timeout=10)
        # Envoy may end the stream before the request is queued: the callback has why
        with contextlib.suppress(InferenceServerException):
            c.async_stream_infer(MODEL, _inputs(), request_id="r")
        try:
            item = got.get(timeout=10)
        finally:
            c.stop_stream()
    if isinstance(item, InferenceServerException):
        status = item.status()
        return str(status).removeprefix("StatusCode.") if status else "STREAM_ERROR"
    assert isinstance(item, grpcclient.InferResult)
    assert item.as_numpy("text_output") is not None
    return "OK"


BAD_TOKENS: dict[str, Any] = {
    "wrong-audience": lambda j: sign(j.key, claims("u-aud", aud="someone-else")),
    "wrong-issuer": lambda j: sign(j.key, claims("u-iss", iss="https://evil.test")),
    "expired": lambda j: sign(j.key, claims("u-exp", exp=int(time.time()) - 600)),
    "no-expiry": lambda j: sign(j.key, claims("u-noexp", exp=None)),
    "no-subject": lambda j: sign(j.key, claims(None)),
    "bad-signature": lambda j: sign(j.rogue, claims("u-sig")),
    "alg-none": lambda j: sign(j.key, claims("u-none"), alg="none"),
    "garbage": lambda j: "not.a.jwt",
}


def test_valid_token_is_served(jwt_stack: Jwt) -> None:
    j = jwt_stack
    assert infer(j.stack.url, sign(j.key, claims("u-ok"))) == "OK"
    assert infer(j.stack.url, sign(j.key, claims("u-aud2", aud=["x", "other-api"]))) == "OK"


def test_missing_token_is_unauthenticated(jwt_stack: Jwt) -> None:
    assert infer(jwt_stack.stack.url, None) == "UNAUTHENTICATED"


@pytest.mark.parametrize("case", sorted(BAD_TOKENS), ids=sorted(BAD_TOKENS))
def test_invalid_tokens_are_unauthenticated(jwt_stack: Jwt, case: str) -> None:
    token = BAD_TOKENS[case](jwt_stack)
    assert infer(jwt_stack.stack.url, token) == "UNAUTHENTICATED"


def test_per_subject_rate_limit_with_dynamic_buckets_and_override(jwt_stack: Jwt) -> None:
    """Default 3 burst at 0.1 req/s per subject: a's 4th and 5th requests are
    RESOURCE_EXHAUSTED; b has its own bucket; vip's override (500) wins."""
    j = jwt_stack
    tok_a, tok_b = sign(j.key, claims("dyn-a")), sign(j.key, claims("dyn-b"))
    got = [infer(j.stack.url, tok_a) for _ in range(5)]
    assert got == ["OK"] * 3 + ["RESOURCE_EXHAUSTED"] * 2, got
    assert [infer(j.stack.url, tok_b) for _ in range(3)] == ["OK"] * 3
    vip = sign(j.key, claims("vip"))
    assert [infer(j.stack.url, vip) for _ in range(6)] == ["OK"] * 6


def test_one_stream_of_many_requests_is_held_to_the_subject_burst(jwt_stack: Jwt) -> None:
    """The subject limit counts inferences (issue 17, attack 3): 20 requests on one
    stream get at most the burst (3) answered, and the stream ends RESOURCE_EXHAUSTED
    (or, once answered, by a reset) naming the subject."""
    j = jwt_stack
    token = sign(j.key, claims("streamer"))
    got = sec_flood.one_stream(j.stack.url, {"authorization": f"Bearer {token}"}, 20)
    assert got.answered <= sec_flood.allowed(3, 0.1, [got]), got
    if got.answered == 0:
        assert (got.status, got.message) == ("RESOURCE_EXHAUSTED", refused_message("streamer"))
    else:
        assert got.status == "INTERNAL" and "RST_STREAM" in got.message, got


def test_spoofed_subject_header_does_not_escape_the_limit(jwt_stack: Jwt) -> None:
    """A client-sent x-caravan-subject is removed before jwt_authn sets it from the
    verified ``sub``, so an exhausted subject cannot borrow another's bucket."""
    j = jwt_stack
    tok = sign(j.key, claims("greedy"))
    assert [infer(j.stack.url, tok) for _ in range(3)] == ["OK"] * 3
    spoof = {"x-caravan-subject": "vip"}
    assert infer(j.stack.url, tok, spoof) == "RESOURCE_EXHAUSTED"


def _raw_unary(url: str, path: str, metadata: tuple[tuple[str, str], ...]) -> str:
    """Status name of an empty unary call to ``path`` (a query string allowed) via Envoy."""
    import grpc

    with grpc.insecure_channel(url) as ch:
        call = ch.unary_unary(path, request_serializer=None, response_deserializer=None)
        try:
            call(b"", metadata=metadata, timeout=10)
        except grpc.RpcError as err:
            return str(err.code()).removeprefix("StatusCode.")  # type: ignore[attr-defined]
    return "OK"


def test_token_in_query_string_is_not_accepted(jwt_stack: Jwt) -> None:
    """Only ``Authorization: Bearer`` carries the token (Envoy's default would also read
    ``?access_token=``, which lands in access logs)."""
    token = sign(jwt_stack.key, claims("u-query"))
    path = "/inference.GRPCInferenceService/ServerLive"
    url = jwt_stack.stack.url
    assert _raw_unary(url, path, (("authorization", f"Bearer {token}"),)) != "UNAUTHENTICATED"
    assert _raw_unary(url, f"{path}?access_token={token}", ()) == "UNAUTHENTICATED"
