"""localize: a secured spec backed by the local PKI (what is on or off stays the spec's),
and the probes' credentials (API key: the first configured; JWT: a token the local
JWKS verifies)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from caravan.local.secure import PROBE_SUBJECT, localize
from caravan.spec import parse_spec

X = "/nonexistent"
XDS = {"cert_file": f"{X}/x.pem", "key_file": f"{X}/x.key", "ca_file": f"{X}/ca.pem",
       "client_ca_file": f"{X}/ca.pem", "client_cert_file": f"{X}/e.pem", "client_key_file": f"{X}/e.key",
       "client_sans": ["spiffe://caravan.test/envoy"]}


def spec(security: dict[str, Any], model_tls: dict[str, Any] | None = None) -> Any:
    models: list[dict[str, Any]] = [{"name": "a", "engine": {"model": "a"}},
                                    {"name": "b", "engine": {"model": "b"}}]
    if model_tls is not None:
        models[1]["upstream_tls"] = model_tls
    return parse_spec({"models": models, "security": security})


def unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def test_api_keys_spec_gets_local_files_and_the_first_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"zed: {'z' * 20}\nalice: {'a' * 20}\n")
    s = spec({"api_keys": {"file": str(keys), "header": "x-key"}, "xds_tls": XDS,
              "listener_tls": {"cert_file": f"{X}/l.pem", "key_file": f"{X}/l.key"},
              "upstream_tls": {"ca_file": f"{X}/ca.pem", "cert_file": f"{X}/e.pem", "key_file": f"{X}/e.key"},
              "direct_replica_access": {"reason": "b's replicas sit behind a network policy"}},
             model_tls={"ca_file": f"{X}/ca.pem", "sni": "replica.caravan"})  # b: TLS, not mutual
    out = localize(s, tmp_path / "state", {})
    dumped = json.dumps(out.spec.model_dump(mode="json"))
    assert X not in dumped and out.pki is not None
    sec = out.spec.security
    assert sec is not None and sec.listener_tls is not None and sec.xds_tls is not None
    assert sec.listener_tls.client_ca_file is None  # still one-way TLS, as in the spec
    assert sec.xds_tls.client_sans == ("spiffe://caravan.test/envoy",)
    assert out.spec.model("b").upstream_tls is not None and out.spec.model("b").upstream_tls.cert_file is None
    assert out.replica_tls["a"] is not None and out.replica_tls["a"].client_ca == out.pki.ca
    assert out.replica_tls["b"] is not None and out.replica_tls["b"].client_ca is None
    assert out.probe.metadata() == (("x-key", "a" * 20),)
    assert out.probe.envoy is not None and out.probe.replica("b") is not None
    client = x509.load_pem_x509_certificate(out.pki.client_cert.read_bytes())
    sans = client.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://caravan.test/envoy"]
    server = x509.load_pem_x509_certificate(out.pki.server_cert.read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "replica.caravan" in names.get_values_for_type(x509.DNSName)
    assert stat.S_IMODE(out.pki.server_key.stat().st_mode) == 0o600


def test_jwt_probe_token_verifies_against_the_local_jwks(tmp_path: Path) -> None:
    user = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()
    jwks = tmp_path / "jwks.json"
    n = base64.urlsafe_b64encode(user.n.to_bytes(256, "big")).rstrip(b"=").decode()
    jwks.write_text(json.dumps({"keys": [{"kty": "RSA", "kid": "k1", "n": n, "e": "AQAB"}]}))
    s = spec({"jwt": {"issuer": "iss", "audiences": ["aud", "other"], "jwks_file": str(jwks)}, "xds_tls": XDS,
              "upstream_tls": {"ca_file": f"{X}/ca.pem", "cert_file": f"{X}/e.pem", "key_file": f"{X}/e.key"}})
    out = localize(s, tmp_path / "state", {})
    assert out.spec.security is not None and out.spec.security.jwt is not None
    local = json.loads(Path(out.spec.security.jwt.jwks_file).read_text())["keys"]
    assert [k["kid"] for k in local] == ["k1", "caravan-local-probe"]  # the spec's keys kept
    ((name, value),) = out.probe.metadata()
    head, body, sig = value.removeprefix("Bearer ").split(".")
    claims = json.loads(unb64(body))
    assert name == "authorization" and json.loads(unb64(head))["alg"] == "ES256"
    assert (claims["iss"], claims["aud"], claims["sub"]) == ("iss", "aud", PROBE_SUBJECT)
    jwk = local[1]
    pub = ec.EllipticCurvePublicNumbers(int.from_bytes(unb64(jwk["x"]), "big"),
                                        int.from_bytes(unb64(jwk["y"]), "big"), ec.SECP256R1()).public_key()
    raw = unb64(sig)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    pub.verify(der, f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))  # raises if invalid


def test_unloadable_key_is_a_clear_error(tmp_path: Path) -> None:
    s = spec({"api_keys": {"env": {"alice": "ALICE_KEY"}}, "xds_tls": XDS,
              "direct_replica_access": {"reason": "a network policy admits only Envoy"}})
    with pytest.raises(ValueError, match=r"security.api_keys.env.alice: \$ALICE_KEY is not set"):
        localize(s, tmp_path, {})


def test_plain_spec_is_left_alone(tmp_path: Path) -> None:
    s = parse_spec({"models": [{"name": "a", "engine": {"model": "a"}}]})
    out = localize(s, tmp_path, {})
    assert out.spec is s and out.pki is None and out.probe.metadata() == ()
    assert not (tmp_path / "pki").exists()
