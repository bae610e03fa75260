"""Security controls as Envoy protos (pure), plus loading API keys (injected reader).

Everything is off unless ``spec.security`` switches it on (see docs/security.md):

* ``downstream_tls``: a ``DownstreamTlsContext`` transport socket for the listener's
  filter chain (ALPN ``h2``; ``require_client_certificate`` when a client CA is set).
  Certificates are *file paths* read by Envoy on its own host, so no private key
  ever travels over xDS.
* ``upstream_tls``: an ``UpstreamTlsContext`` for each model cluster (mTLS to the
  replicas when Envoy has a client certificate). Active gRPC health checks use the
  cluster's transport socket, so they run over TLS too.
* ``http_filters``: before the router, in order, ``api_key_auth`` (HTTP 401, which
  Envoy maps to gRPC UNAUTHENTICATED; the client's name is forwarded upstream in
  ``CLIENT_HEADER`` and the key header is stripped), ``local_ratelimit`` with one
  token bucket per client per stream (RESOURCE_EXHAUSTED when empty), the per-inference
  limit of ``caravan.xds.inference_limit`` (one token per request message, same
  buckets' sizes) and ``body_size_limit``
  (gRPC UNKNOWN "request too long": HTTP 413 through Envoy's HTTP->gRPC table).
  With ``security.jwt`` instead of API keys: ``jwt_authn``, a per-subject
  ``local_ratelimit`` from ``caravan.xds.jwt_auth`` and the per-inference limit.
* ``load_api_keys`` / ``with_loaded_keys``: read keys from the file / env vars named
  in the spec (and the JWKS of ``security.jwt``). Errors name the file, line or
  variable, never the key.
* ``redact``: blank key material in JSON dumps of a snapshot (``/debug/snapshot``).

API keys do travel over xDS (inside the listener): put the xDS channel on TLS
(``security.xds_tls``) wherever the control plane and Envoy are not on one host.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.extensions.filters.http.api_key_auth.v3 import api_key_auth_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.v3 import percent_pb2, token_bucket_pb2
from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    message_factory,
    wrappers_pb2,
)
from pydantic import SecretStr, ValidationError

from caravan.spec import (
    ApiKey,
    ApiKeysSpec,
    ListenerTls,
    PlatformSpec,
    RateLimit,
    UpstreamTls,
    names,
)
from caravan.spec.security import JwtSpec
from caravan.xds import jwt_auth
from caravan.xds.inference_limit import inference_limit

TLS_SOCKET = "envoy.transport_sockets.tls"
CLIENT_HEADER = names.CLIENT_HEADER  # set by Envoy to the authenticated client's name
CLIENT_DESCRIPTOR = "caravan_client"
BODY_SIZE_LIMIT_PACKAGE = "envoy.extensions.filters.http.body_size_limit.v3"
MIN_KEY_CHARS = 16
REDACTED = "<redacted>"

ReadFile = Callable[[str], str]


def _pack(message: object) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message, deterministic=True)
    return out


def _file(path: str) -> base_pb2.DataSource:
    return base_pb2.DataSource(filename=path)


# --------------------------------------------------------------------------- TLS


def _cert(cert_file: str, key_file: str) -> common_pb2.TlsCertificate:
    return common_pb2.TlsCertificate(certificate_chain=_file(cert_file), private_key=_file(key_file))


def downstream_tls(tls: ListenerTls) -> base_pb2.TransportSocket:
    """The listener's TLS transport socket (ALPN h2; mTLS when ``client_ca_file``)."""
    ctx = tls_pb2.DownstreamTlsContext()
    common = ctx.common_tls_context  # a reference: edits land in ctx
    common.tls_certificates.append(_cert(tls.cert_file, tls.key_file))
    common.alpn_protocols.append("h2")
    if tls.client_ca_file is not None:
        common.validation_context.trusted_ca.CopyFrom(_file(tls.client_ca_file))
        ctx.require_client_certificate.value = True
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=_pack(ctx))


def upstream_tls(tls: UpstreamTls) -> base_pb2.TransportSocket:
    """A model cluster's TLS transport socket: verify replicas against ``ca_file``
    (and their DNS SAN against ``sni`` when set); present Envoy's cert when configured."""
    ctx = tls_pb2.UpstreamTlsContext()
    common = ctx.common_tls_context  # a reference: edits land in ctx
    common.alpn_protocols.append("h2")
    common.validation_context.trusted_ca.CopyFrom(_file(tls.ca_file))
    if tls.cert_file is not None and tls.key_file is not None:
        common.tls_certificates.append(_cert(tls.cert_file, tls.key_file))
    if tls.sni:
        ctx.sni = tls.sni
        san = common.validation_context.match_typed_subject_alt_names.add()
        san.san_type = common_pb2.SubjectAltNameMatcher.DNS
        san.matcher.exact = tls.sni
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=_pack(ctx))


# --------------------------------------------------------------------------- HTTP filters


def api_key_auth(keys: ApiKeysSpec) -> hcm_pb2.HttpFilter:
    """``envoy.filters.http.api_key_auth`` over ``keys.loaded``: the key is read from
    ``keys.header`` (stripped before the request goes upstream); the client's name
    is forwarded in ``CLIENT_HEADER``. Raises ValueError when no key is loaded."""
    if not keys.loaded:
        raise ValueError("security.api_keys: no key loaded (call with_loaded_keys first)")
    cfg = api_key_auth_pb2.ApiKeyAuth(
        credentials=[
            api_key_auth_pb2.Credential(key=k.key.get_secret_value(), client=k.client)
            for k in sorted(keys.loaded, key=lambda k: k.client)
        ],
        key_sources=[api_key_auth_pb2.KeySource(header=keys.header)],
        forwarding=api_key_auth_pb2.Forwarding(header=CLIENT_HEADER, hide_credentials=True),
    )
    return hcm_pb2.HttpFilter(name="envoy.filters.http.api_key_auth", typed_config=_pack(cfg))


def token_bucket(limit: RateLimit) -> token_bucket_pb2.TokenBucket:
    """``burst`` tokens, refilled at ``requests_per_s``. Up to 20 req/s: one token per
    ``1000 / rps`` ms (Envoy's minimum fill interval is 50 ms); above: ``round(rps)``
    tokens per second."""
    interval = duration_pb2.Duration()
    if limit.requests_per_s <= 20:
        interval.FromMilliseconds(max(50, math.ceil(1000 / limit.requests_per_s)))
        per_fill = 1
    else:
        interval.FromSeconds(1)
        per_fill = round(limit.requests_per_s)
    return token_bucket_pb2.TokenBucket(
        max_tokens=limit.burst,
        tokens_per_fill=wrappers_pb2.UInt32Value(value=per_fill),
        fill_interval=interval,
    )


def client_limits(keys: ApiKeysSpec) -> dict[str, RateLimit]:
    """The effective limit of each loaded client (override, else the default; a
    client with neither is not limited)."""
    out: dict[str, RateLimit] = {}
    for k in keys.loaded:
        limit = keys.client_limits.get(k.client, keys.rate_limit)
        if limit is not None:
            out[k.client] = limit
    return out


def _always() -> base_pb2.RuntimeFractionalPercent:
    return base_pb2.RuntimeFractionalPercent(
        default_value=percent_pb2.FractionalPercent(
            numerator=100, denominator=percent_pb2.FractionalPercent.HUNDRED
        ),
        runtime_key="caravan.local_rate_limit",
    )


def local_rate_limit(limits: Mapping[str, RateLimit]) -> hcm_pb2.HttpFilter:
    """``envoy.filters.http.local_ratelimit``: one token bucket per client, keyed on
    the ``CLIENT_HEADER`` that ``api_key_auth`` sets. Over the limit: gRPC
    RESOURCE_EXHAUSTED. Requests of unlisted clients are not limited (the default
    bucket is effectively unbounded and only used when no descriptor matches)."""
    descriptors = [
        ratelimit_pb2.LocalRateLimitDescriptor(
            entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=CLIENT_DESCRIPTOR, value=client)],
            token_bucket=token_bucket(limit),
        )
        for client, limit in sorted(limits.items())
    ]
    cfg = _rate_limit_config("caravan_client_rate_limit", CLIENT_HEADER, CLIENT_DESCRIPTOR,
                             descriptors)
    return hcm_pb2.HttpFilter(name="envoy.filters.http.local_ratelimit", typed_config=_pack(cfg))


def subject_rate_limit(jwt: JwtSpec) -> hcm_pb2.HttpFilter | None:
    """``envoy.filters.http.local_ratelimit`` per JWT subject, keyed on the
    ``SUBJECT_HEADER`` that ``jwt_authn`` sets from ``sub``: the overrides, then one
    dynamic bucket per other subject (``jwt.rate_limit``). None when no limit is set."""
    descriptors = jwt_auth.subject_descriptors(jwt, token_bucket)
    if not descriptors:
        return None
    cfg = _rate_limit_config("caravan_subject_rate_limit", jwt_auth.SUBJECT_HEADER,
                             jwt_auth.SUBJECT_DESCRIPTOR, descriptors)
    if jwt.rate_limit is not None:
        cfg.max_dynamic_descriptors.value = jwt_auth.MAX_DYNAMIC_SUBJECTS
    return hcm_pb2.HttpFilter(name="envoy.filters.http.local_ratelimit", typed_config=_pack(cfg))


def _rate_limit_config(
    stat_prefix: str, header: str, key: str,
    descriptors: list[ratelimit_pb2.LocalRateLimitDescriptor],
) -> local_rate_limit_pb2.LocalRateLimit:
    action = route_components_pb2.RateLimit.Action(
        request_headers=route_components_pb2.RateLimit.Action.RequestHeaders(
            header_name=header, descriptor_key=key, skip_if_absent=True
        )
    )
    return local_rate_limit_pb2.LocalRateLimit(
        stat_prefix=stat_prefix,
        token_bucket=token_bucket(RateLimit(requests_per_s=1_000_000, burst=1_000_000)),
        filter_enabled=_always(),
        filter_enforced=_always(),
        rate_limits=[route_components_pb2.RateLimit(actions=[action])],
        descriptors=descriptors,
        always_consume_default_token_bucket=wrappers_pb2.BoolValue(value=False),
        rate_limited_as_resource_exhausted=True,
        enable_x_ratelimit_headers=ratelimit_pb2.DRAFT_VERSION_03,
    )


def _body_size_limit_class() -> Any:
    """The ``BodySizeLimit`` message class. xds-protos ships no Python module for this
    filter (Envoy >= 1.37), so its one-field descriptor is declared here, as in Envoy's
    ``body_size_limit.proto``: ``google.protobuf.UInt64Value max_request_bytes = 1``.
    Registering it in the default pool also lets ``json_format`` print snapshots."""
    pool = descriptor_pool.Default()
    full_name = BODY_SIZE_LIMIT_PACKAGE + ".BodySizeLimit"
    try:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))
    except KeyError:
        pass
    fdp = descriptor_pb2.FileDescriptorProto(
        name="envoy/extensions/filters/http/body_size_limit/v3/body_size_limit.proto",
        package=BODY_SIZE_LIMIT_PACKAGE,
        dependency=["google/protobuf/wrappers.proto"],
        syntax="proto3",
    )
    msg = fdp.message_type.add(name="BodySizeLimit")
    msg.field.add(
        name="max_request_bytes",
        number=1,
        json_name="maxRequestBytes",
        type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        type_name=".google.protobuf.UInt64Value",
    )
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))


def body_size_limit(max_bytes: int) -> hcm_pb2.HttpFilter:
    """``envoy.filters.http.body_size_limit``: it counts request body bytes as they
    stream (no buffering); once a request (for a stream: all its messages so far)
    exceeds ``max_bytes`` Envoy resets the upstream request and replies gRPC UNKNOWN
    "request too long" (HTTP 413 mapped by Envoy's HTTP->gRPC status table)."""
    if max_bytes < 1:
        raise ValueError(f"max_request_bytes: must be >= 1 (got {max_bytes})")
    cfg = _body_size_limit_class()(max_request_bytes=wrappers_pb2.UInt64Value(value=max_bytes))
    return hcm_pb2.HttpFilter(name="envoy.filters.http.body_size_limit", typed_config=_pack(cfg))


def too_large_message(max_bytes: int) -> str:
    """The gRPC message of a request refused for its size."""
    return (f"caravan: request body larger than {max_bytes} bytes "
            "(security.max_request_bytes)")


def _status_is(code: int, runtime_key: str) -> accesslog_pb2.AccessLogFilter:
    return accesslog_pb2.AccessLogFilter(
        status_code_filter=accesslog_pb2.StatusCodeFilter(
            comparison=accesslog_pb2.ComparisonFilter(
                op=accesslog_pb2.ComparisonFilter.EQ,
                value=base_pb2.RuntimeUInt32(default_value=code, runtime_key=runtime_key),
            )
        )
    )


def local_reply_config(spec: PlatformSpec) -> hcm_pb2.LocalReplyConfig | None:
    """With a size limit, Envoy's 413 local replies carry ``too_large_message`` (the
    gRPC status stays UNKNOWN, from Envoy's HTTP->gRPC table). With JWT, local 403
    replies (``jwt_authn``: audience not allowed; nothing else in the chain sends
    403) become 401, so every rejected token is gRPC UNAUTHENTICATED. None when off."""
    sec = spec.security
    if sec is None or (sec.max_request_bytes is None and sec.jwt is None):
        return None
    mappers: list[hcm_pb2.ResponseMapper] = []
    if sec.max_request_bytes is not None:
        body = base_pb2.DataSource(inline_string=too_large_message(sec.max_request_bytes))
        mappers.append(hcm_pb2.ResponseMapper(
            filter=_status_is(413, "caravan.too_large"), body=body))
    if sec.jwt is not None:
        mappers.append(hcm_pb2.ResponseMapper(
            filter=_status_is(403, "caravan.jwt_forbidden"),
            status_code=wrappers_pb2.UInt32Value(value=401)))
    return hcm_pb2.LocalReplyConfig(mappers=mappers)


def http_filters(spec: PlatformSpec) -> list[hcm_pb2.HttpFilter]:
    """The security filters to put before the router, in order (empty when off)."""
    sec = spec.security
    if sec is None:
        return []
    filters: list[hcm_pb2.HttpFilter] = []
    if sec.api_keys is not None:
        filters.append(api_key_auth(sec.api_keys))
        limits = client_limits(sec.api_keys)
        if limits:
            filters += [local_rate_limit(limits), inference_limit(CLIENT_HEADER, limits)]
    if sec.jwt is not None:
        filters.append(jwt_auth.jwt_authn(sec.jwt))
        limiter = subject_rate_limit(sec.jwt)
        if limiter is not None:
            filters += [limiter, inference_limit(jwt_auth.SUBJECT_HEADER, sec.jwt.subject_limits,
                                                 sec.jwt.rate_limit)]
    if sec.max_request_bytes is not None:
        filters.append(body_size_limit(sec.max_request_bytes))
    return filters


# --------------------------------------------------------------------------- API keys


def _read_text(path: str) -> str:
    return Path(path).read_text()


def parse_keys_file(text: str, source: str) -> list[ApiKey]:
    """``client: key`` lines (blank lines and ``#`` comments skipped). Raises
    ValueError naming ``source`` and the line number, never the key."""
    out: list[ApiKey] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        client, sep, key = line.partition(":")
        if not sep:
            raise ValueError(f"{source} line {n}: expected 'client: key'")
        out.append(_key(client.strip(), key.strip(), f"{source} line {n}"))
    return out


def _key(client: str, key: str, where: str) -> ApiKey:
    if len(key) < MIN_KEY_CHARS:
        raise ValueError(f"{where}: the key of client {client!r} is shorter than "
                         f"{MIN_KEY_CHARS} characters")
    try:
        return ApiKey(client=client, key=SecretStr(key))
    except ValidationError:
        raise ValueError(f"{where}: client name {client!r} must match "
                         "[A-Za-z0-9_.-]{1,64}") from None


def load_api_keys(
    keys: ApiKeysSpec, env: Mapping[str, str], read_file: ReadFile = _read_text
) -> tuple[ApiKey, ...]:
    """Every key from ``keys.file`` and ``keys.env``. Raises ValueError naming the
    file/line/variable on a missing file, empty variable, short key, duplicate client
    or duplicate key, or a ``client_limits`` entry without a key."""
    loaded: list[ApiKey] = []
    if keys.file is not None:
        source = f"security.api_keys.file {keys.file!r}"
        try:
            text = read_file(keys.file)
        except OSError as exc:
            raise ValueError(f"{source}: cannot read it ({exc.strerror})") from None
        loaded += parse_keys_file(text, source)
    for client, var in sorted(keys.env.items()):
        value = env.get(var, "").strip()
        where = f"security.api_keys.env.{client}: ${var}"
        if not value:
            raise ValueError(f"{where} is not set or empty")
        loaded.append(_key(client, value, where))
    _check_unique(loaded)
    unknown = sorted(set(keys.client_limits) - {k.client for k in loaded})
    if unknown:
        raise ValueError(f"security.api_keys.client_limits: no key for client(s) {unknown}")
    if not loaded:
        raise ValueError("security.api_keys: no key found in file or env")
    return tuple(sorted(loaded, key=lambda k: k.client))


def _check_unique(keys: list[ApiKey]) -> None:
    clients: set[str] = set()
    secrets: dict[str, str] = {}
    for k in keys:
        if k.client in clients:
            raise ValueError(f"security.api_keys: client {k.client!r} has more than one key")
        clients.add(k.client)
        other = secrets.setdefault(k.key.get_secret_value(), k.client)
        if other != k.client:
            raise ValueError(
                f"security.api_keys: clients {other!r} and {k.client!r} share the same key"
            )


def with_loaded_keys(
    spec: PlatformSpec, env: Mapping[str, str], read_file: ReadFile = _read_text
) -> PlatformSpec:
    """``spec`` with ``security.api_keys.loaded`` and ``security.jwt.loaded_jwks``
    filled (``spec`` itself when both are off). Loaded material is excluded from
    dumps and reprs of the spec. Raises ValueError naming the field on bad input."""
    sec = spec.security
    if sec is None or (sec.api_keys is None and sec.jwt is None):
        return spec
    update: dict[str, object] = {}
    if sec.api_keys is not None:
        loaded = load_api_keys(sec.api_keys, env, read_file)
        update["api_keys"] = sec.api_keys.model_copy(update={"loaded": loaded})
    if sec.jwt is not None:
        update["jwt"] = jwt_auth.load_jwks(sec.jwt, read_file)
    return spec.model_copy(update={"security": sec.model_copy(update=update)})


def redact(data: Any) -> Any:
    """A copy of JSON-able ``data`` with every ``api_key_auth`` credential key
    replaced by ``REDACTED`` (for debug dumps of snapshots)."""
    if isinstance(data, list):
        return [redact(x) for x in data]
    if not isinstance(data, dict):
        return data
    out = {k: redact(v) for k, v in data.items()}
    if str(out.get("@type", "")).endswith("api_key_auth.v3.ApiKeyAuth"):
        out["credentials"] = [
            {**c, "key": REDACTED} if isinstance(c, dict) else c
            for c in out.get("credentials", [])
        ]
    return out
