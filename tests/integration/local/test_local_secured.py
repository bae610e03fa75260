"""`caravan up`'s stack with a secured spec (issue 17, Deliver 5), real Envoy, control
plane and tritonserver: API keys with listener mTLS, xDS mTLS pinned to a SAN and
replicas that accept only Envoy (upstream mTLS); the spec's certificate paths do not
exist here, so the stack backs them with its throwaway local PKI. It starts (the
readiness probe presents the key and the client certificate), a request without the key
is refused, and a replica refuses a client without the local client certificate.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from caravan.local.health import infer_once, model_ready
from caravan.local.supervisor import LocalPorts, LocalStack, StackOptions
from caravan.spec import parse_spec

pytestmark = pytest.mark.integration
MODEL = "alpha"
KEY = "k" * 24
NOWHERE = "/nonexistent/caravan"  # production paths: replaced by the local PKI


def secured_spec(keys_file: Path) -> dict[str, object]:
    return {
        "models": [{"name": MODEL, "engine": {"model": "a"}, "replicas": {"min": 1, "initial": 1, "max": 1}}],
        "security": {
            "api_keys": {"file": str(keys_file)},
            "listener_tls": {"cert_file": f"{NOWHERE}/l.pem", "key_file": f"{NOWHERE}/l.key",
                             "client_ca_file": f"{NOWHERE}/ca.pem"},
            "xds_tls": {"cert_file": f"{NOWHERE}/x.pem", "key_file": f"{NOWHERE}/x.key",
                        "ca_file": f"{NOWHERE}/ca.pem", "client_ca_file": f"{NOWHERE}/ca.pem",
                        "client_cert_file": f"{NOWHERE}/e.pem", "client_key_file": f"{NOWHERE}/e.key",
                        "client_sans": ["spiffe://caravan.test/envoy"]},
            "upstream_tls": {"ca_file": f"{NOWHERE}/ca.pem", "cert_file": f"{NOWHERE}/e.pem",
                             "key_file": f"{NOWHERE}/e.key"},
        },
    }


def test_secured_spec_starts_and_stays_secured(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"alice: {KEY}\n")
    spec = parse_spec(secured_spec(keys))
    options = StackOptions(time_scale=0.01, prometheus=False)
    with LocalStack(spec, tmp_path / "state", LocalPorts.free(), options) as stack:
        assert stack.pki_dir is not None
        sec = stack.spec.security
        assert sec is not None and sec.xds_tls is not None and sec.xds_tls.client_ca_file is not None
        assert Path(sec.xds_tls.client_ca_file).is_relative_to(stack.pki_dir)
        assert stack.probe_envoy(MODEL)  # TLS client cert + the API key
        tls = stack.probe_auth.envoy
        assert not infer_once(stack.endpoint, MODEL, credentials=tls)  # no key
        assert not infer_once(stack.endpoint, MODEL, credentials=tls, metadata=(("x-api-key", "w" * 24),))
        assert not infer_once(stack.endpoint, MODEL, metadata=(("x-api-key", KEY),))  # plaintext
        (replica,) = stack.replicas(MODEL)
        assert not model_ready(replica.endpoint, MODEL)  # plaintext to a TLS replica
        assert model_ready(replica.endpoint, MODEL, credentials=stack.probe_auth.replica(MODEL))
