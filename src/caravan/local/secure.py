"""``caravan up`` with a secured spec: every TLS setting backed by a throwaway local PKI,
and probes that present the configured credentials.

A spec's certificate paths are those of its production hosts (Nomad's ``secrets/``),
which do not exist on a laptop, and client authentication (API keys, JWT) requires
xDS mTLS and replicas that accept only Envoy (spec validation). So ``localize`` writes a
fresh PKI under ``<state_dir>/pki`` at every start (EC P-256, valid 7 days, keys 0600):

* one CA (``ca.pem``), trusted by everyone: the control plane for Envoy's xDS client
  certificate, Envoy for the control plane and the replicas, replicas for Envoy;
* one server certificate (SANs 127.0.0.1, localhost and every model's ``sni``) for the
  control plane, Envoy's listener and the replicas;
* one client certificate (SANs: the spec's ``xds_tls.client_sans``, so identity pinning
  is exercised locally, else ``envoy.caravan.local``) for Envoy and the probes.

Every TLS path in the spec is replaced by these; what is switched on or off is the
spec's (listener TLS with or without client certificates, TLS or mTLS to each model's
replicas, xDS mTLS). Replicas serve gRPC over TLS (``ServerTls``) when their model has
``upstream_tls``, requiring Envoy's certificate when it is mutual.

Probes (``ProbeAuth``): ModelReady on a TLS replica and the request through Envoy use
TLS with the local client certificate; the request through Envoy carries the
credential of the spec: the first API key loaded from ``api_keys.file`` / ``env``
(sorted by client) in ``api_keys.header``, or for JWT a bearer token signed by a probe
key made at start-up (ES256, private half only in this process's memory) whose public
half is added to a local copy of the spec's JWKS (``pki/jwks.json``, which the local
control plane serves instead). The probe counts against that client's (or the
``caravan-local-probe`` subject's) rate limit.

Needs the ``cryptography`` package (a Caravan dependency).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from caravan.spec import PlatformSpec
from caravan.triton.launcher import ServerTls

PROBE_SUBJECT = "caravan-local-probe"
PROBE_KID = "caravan-local-probe"
DEFAULT_CLIENT_SAN = "envoy.caravan.local"
_VALID = dt.timedelta(days=7)


@dataclass(frozen=True)
class LocalPki:
    directory: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def credentials(self) -> grpc.ChannelCredentials:
        """TLS trusting the local CA, presenting the local client certificate."""
        return grpc.ssl_channel_credentials(self.ca.read_bytes(), self.client_key.read_bytes(),
                                            self.client_cert.read_bytes())


@dataclass(frozen=True)
class ProbeAuth:
    """How the supervisor's probes reach secured children (nothing: plaintext, no credential)."""

    envoy: grpc.ChannelCredentials | None = None
    replicas: Mapping[str, grpc.ChannelCredentials | None] = field(default_factory=dict)
    header: tuple[str, str] | None = None  # a static credential (API key)
    signer: Any = None  # the JWT probe key (cryptography EC private key)
    issuer: str = ""
    audience: str = ""

    def replica(self, model: str) -> grpc.ChannelCredentials | None:
        return self.replicas.get(model)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The request metadata that authenticates a probe (a fresh token for JWT)."""
        if self.header is not None:
            return (self.header,)
        if self.signer is not None:
            return (("authorization", f"Bearer {self._token()}"),)
        return ()

    def _token(self) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        now = int(time.time())
        head = _b64(json.dumps({"alg": "ES256", "typ": "JWT", "kid": PROBE_KID}).encode())
        body = _b64(json.dumps({"iss": self.issuer, "aud": self.audience, "sub": PROBE_SUBJECT,
                                "iat": now, "exp": now + 300}).encode())
        der = self.signer.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{head}.{body}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@dataclass(frozen=True)
class LocalSecurity:
    """What ``localize`` produced: the spec the children get, the probes' credentials and
    each model's replica TLS."""

    spec: PlatformSpec
    probe: ProbeAuth
    replica_tls: Mapping[str, ServerTls | None]
    pki: LocalPki | None = None


def needs_pki(spec: PlatformSpec) -> bool:
    sec = spec.security
    return sec is not None and (sec.listener_tls is not None or sec.xds_tls is not None
                                or any(m.upstream_tls is not None for m in spec.models))


def localize(spec: PlatformSpec, state_dir: Path, env: Mapping[str, str]) -> LocalSecurity:
    """``spec`` backed by a fresh local PKI (see the module docstring). Raises
    ValueError naming the field when a configured credential cannot be loaded (an API
    key file or variable, the JWKS)."""
    from caravan.xds.security import with_loaded_keys

    if spec.security is None:
        return LocalSecurity(spec, ProbeAuth(), {m.name: None for m in spec.models})
    loaded = with_loaded_keys(spec, env)  # ValueError naming the field
    pki = make_pki(state_dir / "pki", spec) if needs_pki(spec) else None
    local = _with_local_files(spec, pki)
    probe = _probe(loaded, pki)
    if probe.signer is not None:
        local = _with_probe_jwks(local, loaded, probe, state_dir / "pki" / "jwks.json")
    tls = {m.name: _replica_tls(pki, m.upstream_tls) for m in local.models}
    return LocalSecurity(local, probe, tls, pki)


def _replica_tls(pki: LocalPki | None, upstream: Any) -> ServerTls | None:
    if pki is None or upstream is None:
        return None
    return ServerTls(pki.server_cert, pki.server_key, pki.ca if upstream.cert_file else None)


def _with_local_files(spec: PlatformSpec, pki: LocalPki | None) -> PlatformSpec:
    sec = spec.security
    if sec is None or pki is None:
        return spec
    ca, cert, key, ccert, ckey = (str(p) for p in (pki.ca, pki.server_cert, pki.server_key,
                                                    pki.client_cert, pki.client_key))
    update: dict[str, Any] = {}
    if sec.listener_tls is not None:
        lt = sec.listener_tls
        update["listener_tls"] = lt.model_copy(update={
            "cert_file": cert, "key_file": key, "client_ca_file": ca if lt.client_ca_file else None})
    if sec.xds_tls is not None:
        update["xds_tls"] = sec.xds_tls.model_copy(update={
            "cert_file": cert, "key_file": key, "ca_file": ca, "client_ca_file": ca,
            "client_cert_file": ccert, "client_key_file": ckey})
    if sec.upstream_tls is not None:
        update["upstream_tls"] = _local_upstream(sec.upstream_tls, ca, ccert, ckey)
    models = [m.model_copy(update={"upstream_tls": _local_upstream(m.upstream_tls, ca, ccert, ckey)})
              if m.upstream_tls is not None else m for m in spec.models]
    return spec.model_copy(update={"security": sec.model_copy(update=update), "models": models})


def _local_upstream(tls: Any, ca: str, cert: str, key: str) -> Any:
    mutual = tls.cert_file is not None
    return tls.model_copy(update={"ca_file": ca, "cert_file": cert if mutual else None,
                                  "key_file": key if mutual else None})


def _probe(loaded: PlatformSpec, pki: LocalPki | None) -> ProbeAuth:
    """The probes' credentials for ``loaded`` (a spec whose keys / JWKS are loaded)."""
    sec = loaded.security
    assert sec is not None
    envoy = pki.credentials() if pki is not None and sec.listener_tls is not None else None
    replicas = {m.name: pki.credentials() if pki is not None and m.upstream_tls is not None else None
                for m in loaded.models}
    if sec.api_keys is not None:
        first = min(sec.api_keys.loaded, key=lambda k: k.client)
        return ProbeAuth(envoy, replicas, (sec.api_keys.header, first.key.get_secret_value()))
    if sec.jwt is not None:
        from cryptography.hazmat.primitives.asymmetric import ec

        return ProbeAuth(envoy, replicas, signer=ec.generate_private_key(ec.SECP256R1()),
                         issuer=sec.jwt.issuer, audience=sec.jwt.audiences[0])
    return ProbeAuth(envoy, replicas)


def _with_probe_jwks(local: PlatformSpec, loaded: PlatformSpec, probe: ProbeAuth, path: Path) -> PlatformSpec:
    """``local`` whose JWKS file is a copy of the spec's (``loaded``) plus the probe's
    public key."""
    sec = loaded.security
    assert sec is not None and sec.jwt is not None and local.security is not None
    nums = probe.signer.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "kid": PROBE_KID, "alg": "ES256", "use": "sig",
           "x": _b64(nums.x.to_bytes(32, "big")), "y": _b64(nums.y.to_bytes(32, "big"))}
    keys = [*json.loads(sec.jwt.loaded_jwks)["keys"], jwk]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"keys": keys}))
    jwt = local.security.jwt
    assert jwt is not None
    return local.model_copy(update={"security": local.security.model_copy(
        update={"jwt": jwt.model_copy(update={"jwks_file": str(path)})})})


# ------------------------------------------------------------------------------- PKI


def make_pki(directory: Path, spec: PlatformSpec) -> LocalPki:
    """Write a fresh CA, server and client certificate (and keys, mode 0600) under
    ``directory`` for ``spec`` (server SANs include every model's ``sni``; the client
    certificate carries ``xds_tls.client_sans``)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    directory.mkdir(parents=True, exist_ok=True)
    sec = spec.security
    snis = sorted({m.upstream_tls.sni for m in spec.models if m.upstream_tls and m.upstream_tls.sni})
    sans = list(sec.xds_tls.client_sans) if sec and sec.xds_tls and sec.xds_tls.client_sans else []
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("caravan local CA", ca_key.public_key(), ca_key, None, ca=True)
    s_key, c_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server = _cert("caravan local server", s_key.public_key(), ca_key, ca,
                   sans=["IP:127.0.0.1", "localhost", *snis], server=True)
    client = _cert("caravan local envoy", c_key.public_key(), ca_key, ca,
                   sans=sans or [DEFAULT_CLIENT_SAN], server=False)
    return LocalPki(directory, _pem(directory / "ca.pem", ca), _pem(directory / "server.pem", server),
                    _key(directory / "server.key", s_key), _pem(directory / "client.pem", client),
                    _key(directory / "client.key", c_key))


def _cert(cn: str, public: Any, signer: Any, issuer: Any, *, ca: bool = False,
          sans: Sequence[str] = (), server: bool = False) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(name if issuer is None else issuer.subject).public_key(public)
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + _VALID)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                            critical=True)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        b = b.add_extension(x509.SubjectAlternativeName([_san(s) for s in sans]), critical=False)
    return b.sign(signer, hashes.SHA256())


def _san(value: str) -> Any:
    from cryptography import x509

    if value.startswith("IP:"):
        return x509.IPAddress(ipaddress.ip_address(value[3:]))
    if "://" in value:
        return x509.UniformResourceIdentifier(value)
    return x509.DNSName(value)


def _pem(path: Path, cert: Any) -> Path:
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _key(path: Path, key: Any) -> Path:
    from cryptography.hazmat.primitives import serialization

    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
    return path


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
