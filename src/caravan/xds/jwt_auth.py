"""JWT client authentication at Envoy (pure builders) and loading the JWKS.

* ``jwks_text`` / ``load_jwks``: read and check the JSON Web Key Set named by
  ``security.jwt.jwks_file`` (public keys only: a key with private parts is refused).
  Errors name the field and file, and what is expected.
* client-sent ``SUBJECT_HEADER``, ``CLIENT_HEADER`` and payload header are removed
  before authentication by ``caravan.xds.headers.sanitize_filter`` (the first filter in
  every mode), so a caller cannot pose as another subject or client for the rate
  limiter or the upstream.
* ``jwt_authn``: ``envoy.filters.http.jwt_authn`` with one provider and the JWKS
  inline (``local_jwks``), a rule requiring it on every path. A missing or invalid
  token (signature, issuer, audience, expiry, no ``sub``) gets HTTP 401, which
  Envoy maps to gRPC UNAUTHENTICATED. The token is read from ``Authorization:
  Bearer`` only (never Envoy's default ``?access_token=`` query parameter, which
  ends up in access logs); the header is not forwarded; the ``sub`` claim is
  (``SUBJECT_HEADER``).
* ``subject_descriptors``: local rate-limit descriptors per subject: the overrides
  first (exact values), then a wildcard entry (an empty value: one dynamic token
  bucket per distinct subject, at most ``MAX_DYNAMIC_SUBJECTS`` kept, LRU).

All functions are pure except ``load_jwks`` (file read through an injected reader).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import token_bucket_pb2
from google.protobuf import any_pb2

from caravan.spec import names
from caravan.spec.security import JwtSpec, RateLimit

PROVIDER = "caravan"
SUBJECT_HEADER = names.SUBJECT_HEADER  # set by Envoy from the verified ``sub`` claim
SUBJECT_DESCRIPTOR = "caravan_subject"
MAX_DYNAMIC_SUBJECTS = 10_000
REQUIRED_RSA = ("n", "e")
PRIVATE_PARTS = ("d", "p", "q", "dp", "dq", "qi", "k")

ReadFile = Callable[[str], str]


def _pack(message: object) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message, deterministic=True)
    return out


# --------------------------------------------------------------------------- JWKS


def _check_key(i: int, key: object, where: str) -> None:
    if not isinstance(key, dict):
        raise ValueError(f"{where}: keys[{i}] must be a JSON object (a JWK)")
    kty = key.get("kty")
    if kty not in ("RSA", "EC", "OKP"):
        raise ValueError(f"{where}: keys[{i}].kty is {kty!r}; expected 'RSA', 'EC' or 'OKP'")
    private = sorted(set(PRIVATE_PARTS) & set(key))
    if private:
        raise ValueError(f"{where}: keys[{i}] holds private key material {private}; "
                         "the JWKS must contain public keys only")
    needed = REQUIRED_RSA if kty == "RSA" else ("x",)
    missing = [p for p in needed if not isinstance(key.get(p), str) or not key.get(p)]
    if missing:
        raise ValueError(f"{where}: keys[{i}] ({kty}) lacks {missing}")


def jwks_text(text: str, where: str) -> str:
    """``text`` checked as a public JWKS (``{"keys": [JWK, ...]}``, at least one key,
    no private parts) and returned as compact, key-sorted JSON. Raises ValueError
    starting with ``where`` otherwise."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not JSON ({exc.msg} at line {exc.lineno})") from None
    keys = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ValueError(f"{where}: expected a JWKS object with a non-empty 'keys' list")
    for i, key in enumerate(keys):
        _check_key(i, key, where)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def load_jwks(jwt: JwtSpec, read_file: ReadFile) -> JwtSpec:
    """``jwt`` with ``loaded_jwks`` read from ``jwt.jwks_file``. Raises ValueError
    naming ``security.jwt.jwks_file`` and the path when unreadable or not a JWKS."""
    where = f"security.jwt.jwks_file {jwt.jwks_file!r}"
    try:
        text = read_file(jwt.jwks_file)
    except OSError as exc:
        raise ValueError(f"{where}: cannot read it ({exc.strerror})") from None
    return jwt.model_copy(update={"loaded_jwks": jwks_text(text, where)})


# --------------------------------------------------------------------------- filters


def provider(jwt: JwtSpec) -> jwt_pb2.JwtProvider:
    """The one provider: issuer, audiences, inline JWKS, ``exp`` and ``sub``
    required, the token from ``Authorization: Bearer`` only, ``sub`` forwarded in
    ``SUBJECT_HEADER``. Raises ValueError when the
    JWKS is not loaded."""
    if not jwt.loaded_jwks:
        raise ValueError("security.jwt: JWKS not loaded (call with_loaded_keys first)")
    out = jwt_pb2.JwtProvider(
        issuer=jwt.issuer,
        audiences=list(jwt.audiences),
        subjects=string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".+")),
        require_expiration=True,
        forward=False,
        # Explicit: Envoy's defaults would also take the token from ?access_token=.
        from_headers=[jwt_pb2.JwtHeader(name="Authorization", value_prefix="Bearer ")],
        claim_to_headers=[jwt_pb2.JwtClaimToHeader(header_name=SUBJECT_HEADER, claim_name="sub")],
    )
    out.local_jwks.inline_string = jwt.loaded_jwks
    if jwt.forward_payload_header:
        out.forward_payload_header = jwt.forward_payload_header
    return out


def jwt_authn(jwt: JwtSpec) -> hcm_pb2.HttpFilter:
    """``envoy.filters.http.jwt_authn``: every path requires ``PROVIDER``."""
    cfg = jwt_pb2.JwtAuthentication(
        providers={PROVIDER: provider(jwt)},
        rules=[jwt_pb2.RequirementRule(
            match=route_components_pb2.RouteMatch(prefix="/"),
            requires=jwt_pb2.JwtRequirement(provider_name=PROVIDER),
        )],
    )
    return hcm_pb2.HttpFilter(name="envoy.filters.http.jwt_authn", typed_config=_pack(cfg))


def subject_descriptors(
    jwt: JwtSpec, bucket: Callable[[RateLimit], token_bucket_pb2.TokenBucket]
) -> list[ratelimit_pb2.LocalRateLimitDescriptor]:
    """Descriptors keyed on ``SUBJECT_DESCRIPTOR``: each ``subject_limits`` override
    (sorted), then the wildcard for ``rate_limit`` (empty value: one bucket per
    subject). Empty when no limit is set. ``bucket`` builds a TokenBucket."""
    def one(value: str, limit: RateLimit) -> ratelimit_pb2.LocalRateLimitDescriptor:
        entry = ratelimit_pb2.RateLimitDescriptor.Entry(key=SUBJECT_DESCRIPTOR, value=value)
        return ratelimit_pb2.LocalRateLimitDescriptor(entries=[entry], token_bucket=bucket(limit))

    found = [one(sub, limit) for sub, limit in sorted(jwt.subject_limits.items())]
    if jwt.rate_limit is not None:
        found.append(one("", jwt.rate_limit))
    return found
