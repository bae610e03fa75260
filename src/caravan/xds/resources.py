"""Pure Envoy resource builders: ``PlatformSpec`` + replica sets -> xDS protos.

Every function here is pure: same input, same proto (and so the same bytes under
deterministic serialization, which the versions in ``caravan.xds.snapshot`` rely on).
Nothing here does I/O. Protos returned are fresh objects owned by the caller.

What Envoy gets:

* one Listener ``caravan-grpc`` on ``spec.envoy.address:listen_port``: an HTTP
  connection manager (codec AUTO, so gRPC's HTTP/2 prior knowledge works), routes
  over ADS (``caravan-routes``), the router filter, a JSON access log on stdout,
  and ``generate_request_id`` so every request carries ``x-request-id`` upstream;
  with ``spec.security``: TLS on the filter chain and auth / rate-limit / size
  filters before the router (``caravan.xds.security``);
* one RouteConfiguration ``caravan-routes`` (see ``route_configuration``); every
  model route adds the response header ``x-caravan-upstream`` (``UPSTREAM_HOST_HEADER``)
  naming the replica (``host:port``) that served the request;
* one EDS Cluster ``model-<name>`` per model: its ``routing.policy``'s balancer
  (``caravan.xds.routing``: Maglev on the session header or the prompt prefix with
  bounded loads, least request, round robin), HTTP/2 upstream with keepalive, gRPC
  active health checks, outlier detection (``caravan.xds.resilience``), and TLS to the
  replicas when the model has ``upstream_tls``;
* one ClusterLoadAssignment per model, endpoints grouped by zone.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.core.v3 import (
    address_pb2,
    base_pb2,
    config_source_pb2,
    health_check_pb2,
    protocol_pb2,
    substitution_format_string_pb2,
)
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2, wrappers_pb2

from caravan.discovery.types import HealthStatus, Replica, ReplicaSet
from caravan.spec import ModelSpec, PlatformSpec
from caravan.xds import headers, resilience, routing, security

LISTENER_NAME = "caravan-grpc"
ROUTE_CONFIG_NAME = "caravan-routes"
STREAM_PATH = "/inference.GRPCInferenceService/ModelStreamInfer"
RETRY_ON = resilience.RETRY_ON
UPSTREAM_HOST_HEADER = headers.UPSTREAM_HOST_HEADER
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

# Health checking, keepalive and ejection: caravan.xds.resilience.
HEALTH_INTERVAL_MS = resilience.HEALTH_INTERVAL_MS
CONNECT_TIMEOUT_MS = 1000
CIRCUIT_LIMIT = 100_000

_HEALTH = {
    HealthStatus.HEALTHY: health_check_pb2.HEALTHY,
    HealthStatus.DRAINING: health_check_pb2.DRAINING,
    HealthStatus.UNHEALTHY: health_check_pb2.UNHEALTHY,
}


def pack(message: object) -> any_pb2.Any:
    """Wrap a proto in ``google.protobuf.Any`` (type URL ``type.googleapis.com/<full name>``)."""
    out = any_pb2.Any()
    out.Pack(message, deterministic=True)
    return out


def _ms(ms: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMilliseconds(int(ms))
    return d


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


# --------------------------------------------------------------------------- listener


def access_log_format(spec: PlatformSpec) -> dict[str, str]:
    """The JSON access-log fields (Envoy substitution commands), one line per request."""
    fields = {
        "start_time": "%START_TIME%",
        "model": f"%REQ({spec.envoy.model_header.upper()})%",
        "session": f"%REQ({spec.default.routing.session_header.upper()})%",
        "upstream_host": "%UPSTREAM_HOST%",
        "response_flags": "%RESPONSE_FLAGS%",
        "response_code": "%RESPONSE_CODE%",
        "grpc_status": "%GRPC_STATUS(NUMBER)%",
        "duration_ms": "%DURATION%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "path": "%REQ(:PATH)%",
    }
    for header in sorted({m.routing.session_header for m in spec.models}):
        if header != spec.default.routing.session_header:
            fields[f"session_{header}"] = f"%REQ({header.upper()})%"
    return fields


def _access_log(spec: PlatformSpec) -> accesslog_pb2.AccessLog:
    fmt = struct_pb2.Struct()
    fmt.update(access_log_format(spec))
    stdout = stream_pb2.StdoutAccessLog(
        log_format=substitution_format_string_pb2.SubstitutionFormatString(json_format=fmt)
    )
    return accesslog_pb2.AccessLog(name="envoy.access_loggers.stdout", typed_config=pack(stdout))


def http_connection_manager(spec: PlatformSpec) -> hcm_pb2.HttpConnectionManager:
    """The listener's HCM: AUTO codec, RDS over ADS, router, JSON access log, request ids
    (plus the security filters and size-limit reply text when ``spec.security`` is set)."""
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix="caravan",
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=ROUTE_CONFIG_NAME),
        http_filters=[
            headers.sanitize_filter(spec),
            *security.http_filters(spec),
            *routing.http_filters(spec),
            hcm_pb2.HttpFilter(
                name="envoy.filters.http.router", typed_config=pack(router_pb2.Router())
            ),
        ],
        access_log=[_access_log(spec)],
        generate_request_id=wrappers_pb2.BoolValue(value=True),
        http2_protocol_options=protocol_pb2.Http2ProtocolOptions(),
    )
    headers.treat_every_client_as_external(hcm)
    hcm.request_headers_timeout.CopyFrom(resilience.request_headers_timeout(spec.envoy))
    replies = security.local_reply_config(spec) or hcm_pb2.LocalReplyConfig()
    replies.mappers.append(resilience.stream_timeout_reply())
    hcm.local_reply_config.CopyFrom(replies)
    return hcm


def listener(spec: PlatformSpec) -> listener_pb2.Listener:
    """The one gRPC listener ``caravan-grpc`` on ``spec.envoy.address:listen_port``."""
    hcm = listener_components_pb2.Filter(
        name="envoy.filters.network.http_connection_manager",
        typed_config=pack(http_connection_manager(spec)),
    )
    return listener_pb2.Listener(
        name=LISTENER_NAME,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(
                address=spec.envoy.address, port_value=spec.envoy.listen_port
            )
        ),
        filter_chains=[_filter_chain(spec, hcm)],
    )


def _filter_chain(
    spec: PlatformSpec, hcm: listener_components_pb2.Filter
) -> listener_components_pb2.FilterChain:
    chain = listener_components_pb2.FilterChain(filters=[hcm])
    if spec.security is not None and spec.security.listener_tls is not None:
        chain.transport_socket.CopyFrom(security.downstream_tls(spec.security.listener_tls))
    return chain


# --------------------------------------------------------------------------- routes


def _header_is(header: str, value: str) -> route_components_pb2.HeaderMatcher:
    from envoy.type.matcher.v3 import string_pb2

    return route_components_pb2.HeaderMatcher(
        name=header, string_match=string_pb2.StringMatcher(exact=value)
    )


def _header_absent(header: str) -> route_components_pb2.HeaderMatcher:
    return route_components_pb2.HeaderMatcher(name=header, present_match=False)


def _action(model: ModelSpec, stream: bool) -> route_components_pb2.RouteAction:
    """Streams: no route ``timeout`` but ``max_stream_duration_s`` from the first byte
    (also the cap on grpc-timeout; ``caravan.xds.resilience.max_stream_duration``), the
    model's ``stream_idle_timeout_s`` as ``idle_timeout`` and always a retry policy with its
    ``per_try_timeout_s`` (``caravan.xds.resilience.retry_policy``; 0 retries still
    times an attempt out, which feeds outlier detection). Unary: the model's
    ``unary_timeout_s`` (route timeout, stream duration and cap on grpc-timeout), and with
    ``routing.retries`` > 0 a retry policy. Both hash on the session header.

    Retrying is safe for streams: Envoy retries only until it has forwarded response
    headers downstream, and a gRPC server sends its headers at the latest with its
    first response, so at most one replica's answer ever reaches the client. A client
    sees a stream whose replica failed before its headers as one slower stream from
    another replica (``UPSTREAM_HOST_HEADER`` names that one); once headers have gone
    out, a failure ends the stream with its error (no retry, no duplicated text). Envoy buffers the request
    to replay it: a request larger than the route's buffer limit (1 MiB by default) is
    not retried, and if its first attempt already failed it gets HTTP 507
    (``exceeded request buffer limit while retrying upstream``).
    """
    r = model.routing
    action = route_components_pb2.RouteAction(
        cluster=model.cluster_name, hash_policy=routing.hash_policies(model)
    )
    timeout_ms = 0 if stream else r.unary_timeout_s * 1000
    action.timeout.CopyFrom(_ms(timeout_ms))
    action.max_stream_duration.CopyFrom(resilience.max_stream_duration(r, stream))
    if stream:
        action.idle_timeout.CopyFrom(resilience.stream_idle_timeout(r))
    if stream or r.retries > 0:
        action.retry_policy.CopyFrom(resilience.retry_policy(r, stream))
    return action


def upstream_host_header() -> base_pb2.HeaderValueOption:
    """``UPSTREAM_HOST_HEADER: %UPSTREAM_HOST%`` on the response, overwriting any value
    the replica sent (so it cannot be spoofed). Envoy leaves it out when no upstream
    was chosen (e.g. no healthy replica: a local reply)."""
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=UPSTREAM_HOST_HEADER, value="%UPSTREAM_HOST%"),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def _model_routes(
    spec: PlatformSpec, model: ModelSpec, name: str,
    headers: list[route_components_pb2.HeaderMatcher],
) -> list[route_components_pb2.Route]:
    """``<name>-stream`` (path ModelStreamInfer, the inference path), then
    ``<name>-unary`` (every other RPC of the model's replicas: metadata, readiness and
    ``ModelInfer``, which a Triton vLLM replica refuses; see ``route_configuration``)."""
    stream = route_components_pb2.Route(
        name=f"{name}-stream",
        match=route_components_pb2.RouteMatch(path=STREAM_PATH, headers=headers),
        route=_action(model, stream=True),
        response_headers_to_add=[upstream_host_header()],
        typed_per_filter_config=routing.per_route_filters(spec, model),
    )
    unary = route_components_pb2.Route(
        name=f"{name}-unary",
        match=route_components_pb2.RouteMatch(prefix="/", headers=headers),
        route=_action(model, stream=False),
        response_headers_to_add=[upstream_host_header()],
        typed_per_filter_config=routing.per_route_filters(spec, model),
    )
    return [stream, unary]


def unknown_model_message(spec: PlatformSpec) -> str:
    """Body of the reply to an unknown model header (becomes the gRPC status message)."""
    names = ", ".join(m.name for m in spec.models)
    return f"caravan: unknown model in header {spec.envoy.model_header}; known models: {names}"


def route_configuration(spec: PlatformSpec) -> route_pb2.RouteConfiguration:
    """Routes, first match wins:

    1. per model, header ``<model_header>: <name>`` -> ``model-<name>`` (stream route
       first: path ModelStreamInfer, no timeout; then every other path with the
       model's ``unary_timeout_s``; both retry before response headers, see ``_action``);
    2. no model header -> the default model's cluster (same stream/unary split);
    3. a model header naming no model -> a local 404 reply, which Envoy turns into
       gRPC status UNIMPLEMENTED with ``unknown_model_message`` as grpc-message.
       (Sending an unknown model to the default model would silently serve the wrong
       model, so it is refused instead.)

    Inference is ``ModelStreamInfer`` only: Triton's vLLM backend is decoupled, and
    Triton answers ``ModelInfer`` on a decoupled model with gRPC UNIMPLEMENTED
    ("ModelInfer RPC doesn't support models with decoupled transaction policy"). The
    unary route still forwards it, so a unary client gets that status from the replica
    (UNIMPLEMENTED is not retried), with ``UPSTREAM_HOST_HEADER`` like any routed
    reply; the route exists for the replicas' other unary RPCs (ServerReady,
    ModelMetadata, ModelConfig...), which are idempotent and safe to retry.
    """
    header = spec.envoy.model_header
    routes: list[route_components_pb2.Route] = []
    for m in spec.models:
        routes += _model_routes(spec, m, m.name, [_header_is(header, m.name)])
    routes += _model_routes(spec, spec.default, "default", [_header_absent(header)])
    routes.append(
        route_components_pb2.Route(
            name="unknown-model",
            match=route_components_pb2.RouteMatch(prefix="/"),
            direct_response=route_components_pb2.DirectResponseAction(
                status=404, body=base_pb2.DataSource(inline_string=unknown_model_message(spec))
            ),
            typed_per_filter_config=routing.per_route_filters(spec, None),
        )
    )
    vhost = route_components_pb2.VirtualHost(name="caravan", domains=["*"], routes=routes)
    return route_pb2.RouteConfiguration(name=ROUTE_CONFIG_NAME, virtual_hosts=[vhost],
                                        request_headers_to_add=[headers.forwarded_for()])


# --------------------------------------------------------------------------- clusters


def _http2_options() -> any_pb2.Any:
    opts = http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig(
            http2_protocol_options=resilience.http2_options()
        )
    )
    return pack(opts)


def _circuit_breakers() -> circuit_breaker_pb2.CircuitBreakers:
    limit = wrappers_pb2.UInt32Value(value=CIRCUIT_LIMIT)
    return circuit_breaker_pb2.CircuitBreakers(
        thresholds=[
            circuit_breaker_pb2.CircuitBreakers.Thresholds(
                max_connections=limit,
                max_pending_requests=limit,
                max_requests=limit,
                max_retries=wrappers_pb2.UInt32Value(value=1000),
            )
        ]
    )


def cluster(model: ModelSpec) -> cluster_pb2.Cluster:
    """One EDS cluster per model, balanced as its ``routing.policy`` says (``caravan.xds.routing``).

    ``healthy_panic_threshold`` is 0: Envoy never falls back to sending traffic to
    unhealthy or DRAINING replicas (it fails fast with UNAVAILABLE instead).
    ``update_merge_window`` is 0: endpoint changes apply at once (the control plane
    already debounces). ``ignore_health_on_host_removal``: a replica removed from
    discovery leaves at once, even while its active health check still passes
    (Envoy would otherwise keep routing to it). ``close_connections_on_host_health_failure``:
    a replica that fails its health check loses its connections, so the streams open on it
    end at once (``caravan.xds.resilience``).
    """
    r = model.routing
    common = cluster_pb2.Cluster.CommonLbConfig(
        healthy_panic_threshold=percent_pb2.Percent(value=0.0),
        update_merge_window=_ms(0),
    )
    if r.hash_balance_factor is not None and r.policy in routing.HASHED:
        common.consistent_hashing_lb_config.hash_balance_factor.value = r.hash_balance_factor
    out = cluster_pb2.Cluster(
        name=model.cluster_name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=_ads()),
        connect_timeout=_ms(CONNECT_TIMEOUT_MS),
        lb_policy=routing.lb_policy(model),
        common_lb_config=common,
        typed_extension_protocol_options={HTTP_OPTIONS_KEY: _http2_options()},
        health_checks=[resilience.health_check()],
        outlier_detection=resilience.outlier_detection(),
        ignore_health_on_host_removal=True,
        close_connections_on_host_health_failure=True,
        circuit_breakers=_circuit_breakers(),
    )
    if r.policy in routing.HASHED:
        out.maglev_lb_config.table_size.value = r.maglev_table_size
    if model.upstream_tls is not None:
        out.transport_socket.CopyFrom(security.upstream_tls(model.upstream_tls))
    return out


# --------------------------------------------------------------------------- endpoints


def _lb_endpoint(r: Replica) -> endpoint_components_pb2.LbEndpoint:
    if r.weight < 1:
        raise ValueError(f"replica {r.id!r}: weight must be >= 1 (got {r.weight})")
    if not 0 < r.port < 65536:
        raise ValueError(f"replica {r.id!r}: port must be 1-65535 (got {r.port})")
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=r.address, port_value=r.port)
            ),
            hostname=r.id,
        ),
        health_status=_HEALTH[r.health],
        load_balancing_weight=wrappers_pb2.UInt32Value(value=r.weight),
    )


def _by_zone(replicas: Iterable[Replica]) -> dict[str, list[Replica]]:
    zones: dict[str, list[Replica]] = {}
    for r in sorted(replicas, key=lambda x: (x.zone, x.id)):
        zones.setdefault(r.zone, []).append(r)
    return zones


def load_assignment(
    cluster_name: str, replicas: ReplicaSet | None
) -> endpoint_pb2.ClusterLoadAssignment:
    """The endpoints of one cluster, grouped by zone (locality), sorted for determinism.

    ``None`` (or an empty set) gives an empty assignment. Raises ValueError naming the
    replica on a weight < 1 or an out-of-range port.
    """
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster_name)
    if replicas is None:
        return cla
    for zone, members in _by_zone(replicas.replicas).items():
        cla.endpoints.append(
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=base_pb2.Locality(zone=zone),
                lb_endpoints=[_lb_endpoint(r) for r in members],
            )
        )
    return cla
