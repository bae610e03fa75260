"""The ``security:`` section of the platform spec (docs/security.md).

Every control is off unless set. Secrets never live here: certificates and keys are
file paths, API keys come from files or environment variables, loaded by the
control plane at start-up.
"""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator, model_validator

from caravan.spec import names
from caravan.spec.base import Frozen as _Frozen


class ListenerTls(_Frozen):
    """TLS on Envoy's listener. Paths are read by Envoy on its own host (never sent
    over xDS). ``client_ca_file`` set: mTLS, a client certificate signed by it is required."""

    cert_file: str = Field(min_length=1, description="PEM server certificate chain")
    key_file: str = Field(min_length=1, description="PEM private key")
    client_ca_file: str | None = Field(None, description="require client certs signed by this CA")


class UpstreamTls(_Frozen):
    """TLS (mTLS when ``cert_file``/``key_file`` are set) from Envoy to every replica."""

    ca_file: str = Field(min_length=1, description="CA that signed the replicas' certificates")
    cert_file: str | None = Field(None, description="Envoy's client certificate (mTLS)")
    key_file: str | None = Field(None, description="Envoy's client key (mTLS)")
    sni: str | None = Field(None, description="SNI sent to replicas (and matched to their SAN)")

    @model_validator(mode="after")
    def _pair(self) -> UpstreamTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file: cert_file and key_file must be given together")
        return self


class XdsTls(_Frozen):
    """mTLS on the xDS channel. The control plane serves ``cert_file``/``key_file``;
    Envoy verifies it with ``ca_file``. The control plane requires Envoy's certificate
    (``client_cert_file``/``client_key_file``) signed by ``client_ca_file``: TLS without
    it is refused, since any client reaching the port would download the config (API
    keys included). ``client_sans`` (optional) pins Envoy's identity: the client
    certificate must carry one of these DNS / URI SANs."""

    cert_file: str = Field(min_length=1, description="control plane's server certificate")
    key_file: str = Field(min_length=1, description="control plane's private key")
    ca_file: str = Field(min_length=1, description="CA Envoy trusts for the control plane")
    client_ca_file: str | None = Field(None, description="mTLS: CA of Envoy's client certs")
    client_cert_file: str | None = Field(None, description="Envoy's client certificate")
    client_key_file: str | None = Field(None, description="Envoy's client key")
    client_sans: tuple[str, ...] = Field(
        (), description="accept only client certificates with one of these SANs (DNS or URI)")

    @field_validator("client_sans")
    @classmethod
    def _sans(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for san in v:
            if not san or len(san) > 256 or any(c.isspace() for c in san):
                raise ValueError(f"SAN {san!r} must be 1 to 256 characters without spaces")
        return v

    @model_validator(mode="after")
    def _mtls(self) -> XdsTls:
        if self.client_ca_file is None:
            raise ValueError(
                "client_ca_file: required (the CA of Envoy's client certificates): without "
                "it any client that reaches the xDS port downloads the config, API keys included"
            )
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError(
                "client_cert_file: client_cert_file and client_key_file must be given together"
            )
        if self.client_ca_file is not None and self.client_cert_file is None:
            raise ValueError(
                "client_cert_file: required when client_ca_file is set (the control plane "
                "refuses Envoys without a certificate)"
            )
        return self


class RateLimit(_Frozen):
    """A token bucket: ``burst`` requests at once, refilled at ``requests_per_s``."""

    requests_per_s: float = Field(gt=0, le=1_000_000, description="sustained requests per second")
    burst: int = Field(ge=1, le=1_000_000, description="bucket size (requests)")


class ApiKey(_Frozen):
    """One loaded credential (``client`` names the caller). Only ever built by the
    control plane from ``api_keys.file`` / ``api_keys.env``; the key is a SecretStr."""

    client: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    key: SecretStr


class ApiKeysSpec(_Frozen):
    """API-key authentication at Envoy, with a local rate limit per client.

    Keys never appear in the spec: ``file`` holds ``client: key`` lines (``#``
    comments allowed), ``env`` maps a client name to an environment variable holding
    its key. ``loaded`` is filled by the control plane at start-up; setting it in a
    spec file is an error.
    """

    header: str = Field(names.API_KEY_HEADER, pattern=r"^[a-z0-9-]+$", description="request header")
    file: str | None = Field(None, description="file of 'client: key' lines")
    env: dict[str, str] = Field(default_factory=dict, description="client -> env var name")
    rate_limit: RateLimit | None = Field(None, description="per-client default limit")
    client_limits: dict[str, RateLimit] = Field(
        default_factory=dict, description="per-client overrides of rate_limit"
    )
    loaded: tuple[ApiKey, ...] = Field((), exclude=True, repr=False)

    @field_validator("loaded")
    @classmethod
    def _not_in_spec(cls, v: tuple[ApiKey, ...]) -> tuple[ApiKey, ...]:
        if v:
            raise ValueError(
                "must not be set in a spec: keys come from api_keys.file or api_keys.env"
            )
        return v

    @model_validator(mode="after")
    def _source(self) -> ApiKeysSpec:
        if self.file is None and not self.env:
            raise ValueError("file: give api_keys.file or api_keys.env (or both)")
        for client, var in self.env.items():
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", client):
                raise ValueError(f"env: client name {client!r} must match [A-Za-z0-9_.-]{{1,64}}")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
                raise ValueError(f"env: {var!r} (client {client!r}) is not an env var name")
        return self


class JwtSpec(_Frozen):
    """JWT (RS256/ES256/... per the JWKS) authentication at Envoy, with an optional
    local rate limit per subject (the ``sub`` claim).

    A token must carry ``Authorization: Bearer <jwt>``, be signed by a key of the
    JWKS in ``jwks_file``, name ``issuer`` as ``iss``, one of ``audiences`` in ``aud``,
    and carry ``exp`` and a non-empty ``sub``. The JWKS holds public keys only; the
    control plane reads it at start-up into ``loaded_jwks`` (setting it in a spec
    file is an error) and sends it to Envoy inline over xDS.
    """

    issuer: str = Field(min_length=1, description="required 'iss' claim")
    audiences: tuple[str, ...] = Field(min_length=1, description="accepted 'aud' values")
    jwks_file: str = Field(min_length=1, description="JWKS (public keys) read at start-up")
    forward_payload_header: str | None = Field(
        None, pattern=r"^[a-z0-9-]+$", description="forward the verified payload upstream"
    )
    rate_limit: RateLimit | None = Field(None, description="limit of every subject")
    subject_limits: dict[str, RateLimit] = Field(
        default_factory=dict, description="per-subject overrides of rate_limit"
    )
    loaded_jwks: str = Field("", exclude=True, repr=False)

    @field_validator("loaded_jwks")
    @classmethod
    def _jwks_not_in_spec(cls, v: str) -> str:
        if v:
            raise ValueError("must not be set in a spec: the JWKS comes from jwt.jwks_file")
        return v

    @field_validator("subject_limits")
    @classmethod
    def _subjects(cls, v: dict[str, RateLimit]) -> dict[str, RateLimit]:
        for sub in v:
            if not sub or len(sub) > 256:
                raise ValueError(f"subject {sub!r} must be 1 to 256 characters")
        return v


class DirectReplicaAccess(_Frozen):
    """The explicit opt-out from "replicas accept only Envoy" under client authentication:
    why replicas may be reached without Envoy's client certificate (e.g. a network policy
    that already admits only Envoy). Rendered into the Triton jobs' comments."""

    reason: str = Field(min_length=10, max_length=500,
                        description="why replicas need not require Envoy's certificate")


class SecuritySpec(_Frozen):
    """Security controls; every one is off unless set. See docs/security.md.
    ``api_keys`` and ``jwt`` are alternatives: setting both is an error. Either needs
    ``xds_tls`` (mTLS): the keys and the authentication config reach Envoy over xDS,
    where a plaintext channel lets any client read them and a man in the middle
    replace them."""

    listener_tls: ListenerTls | None = None
    upstream_tls: UpstreamTls | None = None
    xds_tls: XdsTls | None = None
    api_keys: ApiKeysSpec | None = None
    jwt: JwtSpec | None = None
    max_request_bytes: int | None = Field(
        None, ge=1024, le=1 << 30, description="largest request body Envoy accepts, bytes"
    )
    direct_replica_access: DirectReplicaAccess | None = Field(
        None, description="opt out of replica mTLS under client authentication (say why)")

    @property
    def client_auth(self) -> str | None:
        """``api_keys``, ``jwt`` or None: the client authentication in force."""
        return "api_keys" if self.api_keys is not None else "jwt" if self.jwt is not None else None

    @model_validator(mode="after")
    def _one_client_auth(self) -> SecuritySpec:
        if self.api_keys is not None and self.jwt is not None:
            raise ValueError(
                "jwt: api_keys and jwt cannot both be set (pick one client authentication)"
            )
        auth = self.client_auth
        if auth is not None and self.xds_tls is None:
            raise ValueError(
                f"xds_tls: required with {auth} (mTLS between the control plane and Envoy): "
                f"{auth} reach Envoy over xDS, where plaintext lets any client read them and "
                "a man in the middle replace them"
            )
        return self


def replica_mtls_errors(sec: SecuritySpec | None, upstream: list[UpstreamTls | None]) -> list[str]:
    """With client authentication, replicas must accept only Envoy: every model's
    ``upstream_tls`` (``upstream`` in model order, after the ``security.upstream_tls``
    default) needs Envoy's client certificate (``cert_file``/``key_file``), so the Triton
    job requires it (``--grpc-use-ssl-mutual``). Otherwise anyone reaching a replica's
    port skips Envoy's authentication and limits. ``security.direct_replica_access``
    opts out. One ``path: message`` per model at fault."""
    auth = sec.client_auth if sec is not None else None
    if sec is None or auth is None or sec.direct_replica_access is not None:
        return []
    why = (f"required with security.{auth}: replicas must accept only Envoy (mutual TLS: "
           "upstream_tls with ca_file, cert_file and key_file, here or in "
           "security.upstream_tls), or set security.direct_replica_access.reason to say "
           "why they need not")
    return [f"models[{i}].upstream_tls{'' if tls is None else '.cert_file'}: {why}"
            for i, tls in enumerate(upstream) if tls is None or tls.cert_file is None]
