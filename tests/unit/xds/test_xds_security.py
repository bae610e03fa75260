"""Pure security builders and key loading (caravan.xds.security) and the spec section."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.extensions.filters.http.api_key_auth.v3 import api_key_auth_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import json_format

from caravan.spec import ApiKeysSpec, ListenerTls, RateLimit, SpecError, UpstreamTls, parse_spec
from caravan.xds import headers, jwt_auth
from caravan.xds import resources as res
from caravan.xds import security as sec

KEY_A = "a" * 20
KEY_B = "b" * 20


XDS_MTLS = {"cert_file": "c", "key_file": "k", "ca_file": "a", "client_ca_file": "a",
            "client_cert_file": "cc", "client_key_file": "ck"}


UPSTREAM_MTLS = {"ca_file": "rca", "cert_file": "ec", "key_file": "ek"}


def _spec(security: dict[str, Any] | None) -> Any:
    """A spec with ``security``; client authentication gets xDS mTLS and replica mTLS
    unless the section sets ``xds_tls`` / ``upstream_tls`` (``None`` leaves it out)."""
    data: dict[str, Any] = {"models": [{"name": "m", "engine": {"model": "x"}}]}
    if security is not None:
        security = dict(security)
        if "api_keys" in security or "jwt" in security:
            security.setdefault("xds_tls", XDS_MTLS)
            security.setdefault("upstream_tls", UPSTREAM_MTLS)
        data["security"] = {k: v for k, v in security.items() if v is not None}
    return parse_spec(data)


def _files(files: dict[str, str]) -> Any:
    def read(path: str) -> str:
        if path not in files:
            raise FileNotFoundError(2, "No such file or directory")
        return files[path]

    return read


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"alice: {KEY_A}\n", [("alice", KEY_A)]),
        (f"# comment\n\n alice : {KEY_A} \nbob:{KEY_B}", [("alice", KEY_A), ("bob", KEY_B)]),
        (f"svc.v1_x-y: {KEY_A}:with:colons", [("svc.v1_x-y", KEY_A + ":with:colons")]),
    ],
    ids=["one", "comments-and-spaces", "colons-in-key"],
)
def test_parse_keys_file(text: str, expected: list[tuple[str, str]]) -> None:
    got = sec.parse_keys_file(text, "f")
    assert [(k.client, k.key.get_secret_value()) for k in got] == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no colon here", "f line 1: expected 'client: key'"),
        (f"\nalice: {KEY_A}\nbob: zq9", "f line 3: the key of client 'bob' is shorter than 16"),
        (f"bad name!: {KEY_A}", "f line 1: client name 'bad name!' must match"),
    ],
    ids=["no-colon", "short-key", "bad-client"],
)
def test_parse_keys_file_errors_name_the_line_not_the_key(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("!", ".")) as err:
        sec.parse_keys_file(text, "f")
    assert KEY_A not in str(err.value) and "zq9" not in str(err.value)


@pytest.mark.parametrize(
    ("keys", "env", "files", "message"),
    [
        ({"file": "/k"}, {}, {}, "security.api_keys.file '/k': cannot read it"),
        ({"env": {"c": "V"}}, {}, {}, r"security.api_keys.env.c: \$V is not set or empty"),
        ({"file": "/k", "env": {"alice": "V"}}, {"V": KEY_B}, {"/k": f"alice: {KEY_A}"},
         "client 'alice' has more than one key"),
        ({"file": "/k"}, {}, {"/k": f"a: {KEY_A}\nb: {KEY_A}"}, "clients 'a' and 'b' share"),
        ({"file": "/k", "client_limits": {"zed": {"requests_per_s": 1, "burst": 1}}}, {},
         {"/k": f"a: {KEY_A}"}, r"client_limits: no key for client\(s\) \['zed'\]"),
        ({"file": "/k"}, {}, {"/k": "# nothing\n"}, "no key found"),
    ],
    ids=["missing-file", "empty-env", "dup-client", "dup-key", "limit-without-key", "empty"],
)
def test_load_api_keys_errors(
    keys: dict[str, Any], env: dict[str, str], files: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as err:
        sec.load_api_keys(ApiKeysSpec.model_validate(keys), env, _files(files))
    assert KEY_A not in str(err.value) and KEY_B not in str(err.value)


def test_loaded_keys_never_in_repr_or_dump() -> None:
    spec = _spec({"api_keys": {"file": "/k", "env": {"bob": "BOB"}}})
    loaded = sec.with_loaded_keys(spec, {"BOB": KEY_B}, _files({"/k": f"alice: {KEY_A}"}))
    assert loaded.security is not None and loaded.security.api_keys is not None
    assert [k.client for k in loaded.security.api_keys.loaded] == ["alice", "bob"]
    for text in (repr(loaded), str(loaded), loaded.model_dump_json(), str(loaded.model_dump())):
        assert KEY_A not in text and KEY_B not in text


@pytest.mark.parametrize(
    ("security", "message"),
    [
        ({"api_keys": {"file": "/k", "loaded": [{"client": "a", "key": KEY_A}]}},
         "security.api_keys.loaded: must not be set in a spec"),
        ({"api_keys": {}}, "security.api_keys.file: give api_keys.file or api_keys.env"),
        ({"api_keys": {"env": {"a": "1BAD"}}}, "security.api_keys.env: '1BAD' (client"),
        ({"upstream_tls": {"ca_file": "c", "cert_file": "x"}},
         "security.upstream_tls.cert_file: cert_file and key_file must be given together"),
        ({"xds_tls": {"cert_file": "c", "key_file": "k", "ca_file": "a", "client_ca_file": "a"}},
         "security.xds_tls.client_cert_file: required when client_ca_file is set"),
        ({"xds_tls": {"cert_file": "c", "key_file": "k", "ca_file": "a"}},
         "security.xds_tls.client_ca_file: required (the CA of Envoy's client certificates)"),
        ({"xds_tls": {"cert_file": "c", "key_file": "k", "ca_file": "a", "client_ca_file": "a",
                      "client_cert_file": "c", "client_key_file": "k", "client_sans": ["a b"]}},
         "security.xds_tls.client_sans: SAN 'a b' must be 1 to 256 characters"),
        ({"api_keys": {"file": "/k"}, "xds_tls": None},
         "security.xds_tls: required with api_keys (mTLS between the control plane and Envoy)"),
        ({"jwt": {"issuer": "https://iss", "audiences": ["api"], "jwks_file": "/j"},
          "xds_tls": None}, "security.xds_tls: required with jwt"),
        ({"max_request_bytes": 10}, "security.max_request_bytes: must be >= 1024 (got 10)"),
        ({"api_keys": {"file": "/k", "rate_limit": {"requests_per_s": 0, "burst": 1}}},
         "security.api_keys.rate_limit.requests_per_s: must be > 0.0 (got 0)"),
    ],
    ids=["literal-keys", "no-source", "bad-env-name", "cert-without-key", "xds-mtls-no-cert",
         "xds-tls-no-client-ca", "xds-bad-san", "api-keys-without-xds-mtls",
         "jwt-without-xds-mtls", "tiny-size-limit", "zero-rate"],
)
def test_spec_security_errors(security: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as err:
        _spec(security)
    assert any(e.startswith(message) for e in err.value.errors), err.value.errors


def test_upstream_tls_defaults_to_every_model_unless_overridden() -> None:
    spec = parse_spec({
        "models": [{"name": "a", "engine": {"model": "x"}},
                   {"name": "b", "engine": {"model": "x"}, "upstream_tls": {"ca_file": "/b"}}],
        "security": {"upstream_tls": {"ca_file": "/all"}},
    })
    assert [m.upstream_tls.ca_file for m in spec.models if m.upstream_tls] == ["/all", "/b"]


def _unpack(any_msg: Any, cls: Any) -> Any:
    out = cls()
    assert any_msg.Unpack(out)
    return out


@pytest.mark.parametrize(
    ("client_ca", "required"), [(None, False), ("/ca", True)], ids=["tls", "mtls"]
)
def test_downstream_tls(client_ca: str | None, required: bool) -> None:
    sock = sec.downstream_tls(ListenerTls(cert_file="/c", key_file="/k", client_ca_file=client_ca))
    ctx = _unpack(sock.typed_config, tls_pb2.DownstreamTlsContext)
    common = ctx.common_tls_context
    assert list(common.alpn_protocols) == ["h2"]
    assert common.tls_certificates[0].certificate_chain.filename == "/c"
    assert common.tls_certificates[0].private_key.filename == "/k"
    assert ctx.require_client_certificate.value is required
    assert common.validation_context.trusted_ca.filename == (client_ca or "")


def test_upstream_tls_mtls_with_sni() -> None:
    tls = UpstreamTls(ca_file="/ca", cert_file="/c", key_file="/k", sni="replica.x")
    ctx = _unpack(sec.upstream_tls(tls).typed_config, tls_pb2.UpstreamTlsContext)
    v = ctx.common_tls_context.validation_context
    assert (ctx.sni, v.trusted_ca.filename) == ("replica.x", "/ca")
    assert v.match_typed_subject_alt_names[0].matcher.exact == "replica.x"
    assert ctx.common_tls_context.tls_certificates[0].private_key.filename == "/k"


@pytest.mark.parametrize(
    ("rps", "burst", "interval_ms", "per_fill"),
    [(0.1, 2, 10_000, 1), (4, 8, 250, 1), (20, 5, 50, 1), (100, 100, 1000, 100), (33.4, 1, 1000, 33)],
    ids=["slow", "4rps", "20rps-min-interval", "100rps", "fractional"],
)
def test_token_bucket(rps: float, burst: int, interval_ms: int, per_fill: int) -> None:
    b = sec.token_bucket(RateLimit(requests_per_s=rps, burst=burst))
    assert (b.max_tokens, b.tokens_per_fill.value) == (burst, per_fill)
    assert b.fill_interval.ToMilliseconds() == interval_ms


def _loaded_spec(security: dict[str, Any]) -> Any:
    files = _files({"/k": f"alice: {KEY_A}\nbob: {KEY_B}"})
    return sec.with_loaded_keys(_spec(security), {}, files)


def test_filters_in_order_before_router_and_keys_only_in_auth_filter() -> None:
    spec = _loaded_spec({
        "api_keys": {"file": "/k", "client_limits": {"bob": {"requests_per_s": 1, "burst": 3}}},
        "max_request_bytes": 4096,
    })
    hcm = res.http_connection_manager(spec)
    names = [f.name for f in hcm.http_filters]
    assert names == [headers.FILTER_NAME, "envoy.filters.http.api_key_auth",
                     "envoy.filters.http.local_ratelimit", "envoy.filters.http.wasm",
                     "envoy.filters.http.body_size_limit", "envoy.filters.http.router"]
    auth = _unpack(hcm.http_filters[1].typed_config, api_key_auth_pb2.ApiKeyAuth)
    assert [(c.client, c.key) for c in auth.credentials] == [("alice", KEY_A), ("bob", KEY_B)]
    assert auth.forwarding.header == sec.CLIENT_HEADER and auth.forwarding.hide_credentials
    rl = _unpack(hcm.http_filters[2].typed_config, local_rate_limit_pb2.LocalRateLimit)
    assert rl.rate_limited_as_resource_exhausted
    assert [d.entries[0].value for d in rl.descriptors] == ["bob"], "alice has no limit"
    assert rl.filter_enforced.default_value.numerator == 100
    size = json_format.MessageToDict(hcm.http_filters[4])
    assert size["typedConfig"]["maxRequestBytes"] == "4096"
    assert hcm.local_reply_config.mappers[0].body.inline_string == sec.too_large_message(4096)


def test_security_off_changes_nothing() -> None:
    plain = _spec(None)
    assert [f.name for f in res.http_connection_manager(plain).http_filters] == [
        headers.FILTER_NAME, "envoy.filters.http.router"]
    assert not res.listener(plain).filter_chains[0].HasField("transport_socket")
    assert not res.cluster(plain.models[0]).HasField("transport_socket")
    assert sec.http_filters(plain) == [] and sec.local_reply_config(plain) is None


def test_api_key_filter_needs_loaded_keys() -> None:
    with pytest.raises(ValueError, match="no key loaded"):
        res.http_connection_manager(_spec({"api_keys": {"file": "/k"}}))


def test_redact_blanks_only_api_keys() -> None:
    spec = _loaded_spec({"api_keys": {"file": "/k"}})
    dumped = json_format.MessageToDict(res.pack(res.listener(spec)))
    text = str(sec.redact(dumped))
    assert KEY_A not in text and KEY_B not in text
    assert sec.REDACTED in text and "alice" in text and "caravan-grpc" in text
    assert KEY_A in str(dumped), "redact must not modify its input"


# --------------------------------------------------------------------------- JWT

JWKS = '{"keys": [{"kty": "RSA", "kid": "k1", "n": "sXch", "e": "AQAB"}]}'
JWT = {"issuer": "https://iss", "audiences": ["api"], "jwks_file": "/jwks.json"}


def _jwt_spec(**over: Any) -> Any:
    spec = _spec({"jwt": {**JWT, **over}})
    return sec.with_loaded_keys(spec, {}, _files({"/jwks.json": JWKS}))


@pytest.mark.parametrize(
    ("security", "message"),
    [
        ({"jwt": JWT, "api_keys": {"file": "/k"}},
         "security.jwt: api_keys and jwt cannot both be set"),
        ({"jwt": {**JWT, "loaded_jwks": JWKS}}, "security.jwt.loaded_jwks: must not be set"),
        ({"jwt": {**JWT, "audiences": []}}, "security.jwt.audiences: must have at least 1 item(s)"),
        ({"jwt": {**JWT, "issuer": ""}}, "security.jwt.issuer: must not be empty"),
        ({"jwt": {**JWT, "forward_payload_header": "X Bad"}},
         "security.jwt.forward_payload_header: String should match pattern"),
        ({"jwt": {**JWT, "subject_limits": {"": {"requests_per_s": 1, "burst": 1}}}},
         "security.jwt.subject_limits: subject '' must be 1 to 256"),
    ],
    ids=["with-api-keys", "literal-jwks", "no-audience", "empty-issuer", "bad-header",
         "empty-subject"],
)
def test_spec_jwt_errors(security: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as err:
        _spec(security)
    assert any(e.startswith(message) for e in err.value.errors), err.value.errors


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "security.jwt.jwks_file '/jwks.json': cannot read it (No such file or directory)"),
        ({"/jwks.json": "{nope"}, "security.jwt.jwks_file '/jwks.json': not JSON"),
        ({"/jwks.json": '{"keys": []}'}, "expected a JWKS object with a non-empty 'keys' list"),
        ({"/jwks.json": '[1]'}, "expected a JWKS object with a non-empty 'keys' list"),
        ({"/jwks.json": '{"keys": [{"kty": "oct", "k": "x"}]}'},
         "keys[0].kty is 'oct'; expected 'RSA', 'EC' or 'OKP'"),
        ({"/jwks.json": '{"keys": [{"kty": "RSA", "n": "a", "e": "b", "d": "c"}]}'},
         "keys[0] holds private key material ['d']; the JWKS must contain public keys only"),
        ({"/jwks.json": '{"keys": [{"kty": "RSA", "n": "a"}]}'}, "keys[0] (RSA) lacks ['e']"),
    ],
    ids=["missing", "not-json", "no-keys", "not-object", "symmetric", "private", "no-exponent"],
)
def test_load_jwks_errors_name_the_field(files: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as err:
        sec.with_loaded_keys(_spec({"jwt": JWT}), {}, _files(files))
    assert message in str(err.value)


def test_loaded_jwks_is_compact_and_not_dumped() -> None:
    spec = _jwt_spec()
    assert spec.security.jwt.loaded_jwks == (
        '{"keys":[{"e":"AQAB","kid":"k1","kty":"RSA","n":"sXch"}]}')
    assert "sXch" not in repr(spec) and "loaded_jwks" not in str(spec.model_dump())


def test_jwt_filters_in_order_with_provider_and_rule() -> None:
    spec = _jwt_spec(forward_payload_header="x-jwt-payload")
    hcm = res.http_connection_manager(spec)
    assert [f.name for f in hcm.http_filters] == [
        "envoy.filters.http.header_mutation", "envoy.filters.http.jwt_authn",
        "envoy.filters.http.router"], "no rate limit filter without a limit"
    strip = _unpack(hcm.http_filters[0].typed_config, header_mutation_pb2.HeaderMutation)
    assert {jwt_auth.SUBJECT_HEADER, sec.CLIENT_HEADER, "x-jwt-payload"} <= {
        m.remove for m in strip.mutations.request_mutations}
    cfg = _unpack(hcm.http_filters[1].typed_config, jwt_pb2.JwtAuthentication)
    p = cfg.providers[jwt_auth.PROVIDER]
    assert (p.issuer, list(p.audiences), p.forward) == ("https://iss", ["api"], False)
    assert p.require_expiration and p.subjects.safe_regex.regex == ".+"
    assert p.local_jwks.inline_string == spec.security.jwt.loaded_jwks
    assert p.forward_payload_header == "x-jwt-payload"
    assert [(h.name, h.value_prefix) for h in p.from_headers] == [("Authorization", "Bearer ")]
    assert not p.from_params and not p.from_cookies  # never ?access_token=
    assert [(c.claim_name, c.header_name) for c in p.claim_to_headers] == [
        ("sub", jwt_auth.SUBJECT_HEADER)]
    rule = cfg.rules[0]
    assert (rule.match.prefix, rule.requires.provider_name) == ("/", jwt_auth.PROVIDER)
    assert hcm.local_reply_config.mappers[0].status_code.value == 401


@pytest.mark.parametrize(
    ("limits", "values", "dynamic"),
    [
        ({"rate_limit": {"requests_per_s": 2, "burst": 4}}, [""], 10_000),
        ({"subject_limits": {"z": {"requests_per_s": 1, "burst": 1},
                             "a": {"requests_per_s": 9, "burst": 9}}}, ["a", "z"], 0),
        ({"rate_limit": {"requests_per_s": 2, "burst": 4},
          "subject_limits": {"vip": {"requests_per_s": 50, "burst": 50}}}, ["vip", ""], 10_000),
    ],
    ids=["default-only", "overrides-only", "overrides-then-wildcard"],
)
def test_subject_rate_limit_descriptors(
    limits: dict[str, Any], values: list[str], dynamic: int
) -> None:
    hcm = res.http_connection_manager(_jwt_spec(**limits))
    rl = _unpack(hcm.http_filters[2].typed_config, local_rate_limit_pb2.LocalRateLimit)
    assert [d.entries[0].value for d in rl.descriptors] == values
    assert {d.entries[0].key for d in rl.descriptors} == {jwt_auth.SUBJECT_DESCRIPTOR}
    assert rl.rate_limits[0].actions[0].request_headers.header_name == jwt_auth.SUBJECT_HEADER
    assert rl.max_dynamic_descriptors.value == dynamic
    assert rl.rate_limited_as_resource_exhausted


def test_jwt_filter_needs_loaded_jwks() -> None:
    with pytest.raises(ValueError, match="JWKS not loaded"):
        res.http_connection_manager(_spec({"jwt": JWT}))
