"""How Envoy cuts off hung and gray replicas: the pure builders of a model cluster's
HTTP/2 keepalive, active health check and outlier detection, and of a stream route's
timeouts and retry policy (``caravan.xds.resources`` puts them in the cluster and routes).

Three failures, three signals (docs/reliability.md measures each on the real Envoy and
tritonserver):

* **A stopped replica** (SIGSTOP, a frozen host, a partition): the kernel may still hold
  its TCP connections open, but nothing answers. The gRPC health check times out and
  the host is unhealthy after ``UNHEALTHY_THRESHOLD`` misses (~3 s);
  ``close_connections_on_host_health_failure`` then closes Envoy's connections to it,
  which ends the streams open on it at once instead of after Envoy's 300 s default
  stream idle timeout. Independently, HTTP/2 keepalive PINGs unanswered for
  ``KEEPALIVE_TIMEOUT_MS`` close the connection (also for a host whose health check
  connection is fine but whose data connection is not).
* **A gray replica** (answers health checks and ModelReady, never answers inference):
  a request it holds gets no response headers, so the route's ``per_try_timeout``
  fires, Envoy resets that attempt and retries it on another replica
  (``previous_hosts``), and reports a local-origin timeout to outlier detection, which
  ejects the replica after ``CONSECUTIVE_GATEWAY_FAILURES`` of them (see
  ``outlier_detection``).
* **A stream that goes silent after it started**: the route's ``idle_timeout`` (the
  model's ``routing.stream_idle_timeout_s``) ends it. Envoy never retries once it has
  forwarded response headers (a gRPC server sends them with its first response), so
  the client gets the error and no duplicated text.

Every function is pure and returns a fresh proto.
"""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import outlier_detection_pb2
from envoy.config.core.v3 import health_check_pb2, protocol_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

from caravan.spec import EnvoySpec, Routing

# Retried before response headers: connect failure, refused or reset stream (which
# includes a per-try timeout), gRPC UNAVAILABLE or CANCELLED in a headers-only reply.
RETRY_ON = "unavailable,reset,connect-failure,refused-stream,cancelled"
# A retry picks a host up to this many times until it is not a previous one (Maglev
# rehashes per pick): with 2 replicas 1 retry in 2**10 still lands on the failed host.
HOST_SELECTION_ATTEMPTS = 10
# Active gRPC health check: a stopped replica is unhealthy after 2 missed checks (~3 s).
HEALTH_INTERVAL_MS = 1000
HEALTH_TIMEOUT_MS = 1000
HEALTHY_THRESHOLD = 1
UNHEALTHY_THRESHOLD = 2
# HTTP/2 PING on every upstream connection; unanswered for the timeout: connection closed.
KEEPALIVE_INTERVAL_MS = 2000
KEEPALIVE_TIMEOUT_MS = 2000
# Outlier detection (see ``outlier_detection``).
CONSECUTIVE_GATEWAY_FAILURES = 3
CONSECUTIVE_5XX = 5
BASE_EJECTION_MS = 5000
MAX_EJECTION_PERCENT = 50
OUTLIER_INTERVAL_MS = 1000


def _ms(ms: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMilliseconds(int(ms))
    return d


def _pack(message: object) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message, deterministic=True)
    return out


def http2_options() -> protocol_pb2.Http2ProtocolOptions:
    """Upstream HTTP/2 with keepalive: a PING every ``KEEPALIVE_INTERVAL_MS`` (Envoy adds
    15 % jitter); no PING ACK within ``KEEPALIVE_TIMEOUT_MS`` closes the connection and
    resets its streams (a frozen process ACKs nothing; a gray one's gRPC core still does)."""
    return protocol_pb2.Http2ProtocolOptions(
        connection_keepalive=protocol_pb2.KeepaliveSettings(
            interval=_ms(KEEPALIVE_INTERVAL_MS), timeout=_ms(KEEPALIVE_TIMEOUT_MS)
        )
    )


def health_check() -> health_check_pb2.HealthCheck:
    """gRPC ``grpc.health.v1`` server-wide check (service ""), as Triton serves it:
    unhealthy after ``UNHEALTHY_THRESHOLD`` failed or timed-out checks, healthy again
    after ``HEALTHY_THRESHOLD`` good one."""
    return health_check_pb2.HealthCheck(
        timeout=_ms(HEALTH_TIMEOUT_MS),
        interval=_ms(HEALTH_INTERVAL_MS),
        no_traffic_interval=_ms(HEALTH_INTERVAL_MS),
        unhealthy_threshold=wrappers_pb2.UInt32Value(value=UNHEALTHY_THRESHOLD),
        healthy_threshold=wrappers_pb2.UInt32Value(value=HEALTHY_THRESHOLD),
        grpc_health_check=health_check_pb2.HealthCheck.GrpcHealthCheck(),
    )


def outlier_detection() -> outlier_detection_pb2.OutlierDetection:
    """The inference-level health signal: eject a replica that fails requests even
    though its health check passes.

    * Signal: ``consecutive_gateway_failure`` (3). Local and external errors are not
      split, so Envoy counts a per-try timeout (a request with no response headers in
      ``routing.per_try_timeout_s``: the gray failure) as a 504, a refused or reset
      connection as a 503, both gateway failures. A gRPC reply counts by its
      ``grpc-status`` only when it comes in the headers (trailers-only); an answered
      stream is HTTP 200, so a model's in-stream errors (bad input) never eject.
      ``consecutive_5xx`` (5) catches the other 5xx a replica may send.
    * ``successful_active_health_check_uneject_host`` is off: a gray replica passes its
      health checks, and Envoy would otherwise put it back at the next one (1 s later).
      An ejected replica returns after ``BASE_EJECTION_MS`` times the number of times it
      was ejected (Envoy's default cap, 300 s).
    * ``max_ejection_percent`` 50: at most half of a model's replicas are ejected at once,
      and never the last one (Envoy ejects only while the ejected share, this one
      included, stays at or below it: 1 of 2, 1 of 3, 2 of 4, none of 1). When more than
      half look bad the cause is more likely the load or the requests than the replicas,
      and ejecting more would pile their traffic on the rest; with
      ``healthy_panic_threshold`` 0 an emptied cluster would refuse every request.
    """
    return outlier_detection_pb2.OutlierDetection(
        consecutive_5xx=wrappers_pb2.UInt32Value(value=CONSECUTIVE_5XX),
        consecutive_gateway_failure=wrappers_pb2.UInt32Value(value=CONSECUTIVE_GATEWAY_FAILURES),
        enforcing_consecutive_gateway_failure=wrappers_pb2.UInt32Value(value=100),
        interval=_ms(OUTLIER_INTERVAL_MS),
        base_ejection_time=_ms(BASE_EJECTION_MS),
        max_ejection_percent=wrappers_pb2.UInt32Value(value=MAX_EJECTION_PERCENT),
        successful_active_health_check_uneject_host=wrappers_pb2.BoolValue(value=False),
    )


def retry_policy(routing: Routing, stream: bool) -> route_components_pb2.RetryPolicy:
    """Retry on another replica (``previous_hosts``) when the upstream fails before it
    sends response headers (``RETRY_ON``), ``routing.retries`` times. Streams also get
    ``per_try_timeout`` (``routing.per_try_timeout_s``): an attempt with no response
    headers by then is reset and retried elsewhere. Envoy starts that timer once it has
    the whole request (the client half-closed) and ignores it after response headers,
    so a stream that has started is never cut by it."""
    policy = route_components_pb2.RetryPolicy(
        retry_on=RETRY_ON,
        num_retries=wrappers_pb2.UInt32Value(value=routing.retries),
        retry_host_predicate=[
            route_components_pb2.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=_pack(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        ],
        host_selection_retry_max_attempts=HOST_SELECTION_ATTEMPTS,
    )
    if stream:
        policy.per_try_timeout.CopyFrom(_ms(routing.per_try_timeout_s * 1000))
    return policy


def stream_idle_timeout(routing: Routing) -> duration_pb2.Duration:
    """The stream route's ``idle_timeout``: a stream with nothing sent either way for
    ``routing.stream_idle_timeout_s`` ends (before response headers: a local reply;
    after: a reset)."""
    return _ms(routing.stream_idle_timeout_s * 1000)


def max_stream_duration(routing: Routing, stream: bool) -> route_components_pb2.RouteAction.MaxStreamDuration:
    """The bound on a whole stream, from its first byte, however busy it is (a client
    trickling data more often than the idle timeout, an answer that never ends): streams
    ``routing.max_stream_duration_s``, unary calls ``routing.unary_timeout_s`` (the route
    ``timeout`` starts only once the request is complete). The same value caps a client's
    ``grpc-timeout`` (uncapped, it would replace the bound). When it fires, Envoy answers
    gRPC DEADLINE_EXCEEDED before response headers, and resets the stream after them
    (the client sees INTERNAL; docs/operator-nomad.md, Timeouts)."""
    seconds = routing.max_stream_duration_s if stream else routing.unary_timeout_s
    return route_components_pb2.RouteAction.MaxStreamDuration(
        max_stream_duration=_ms(seconds * 1000), grpc_timeout_header_max=_ms(seconds * 1000)
    )


def request_headers_timeout(envoy: EnvoySpec) -> duration_pb2.Duration:
    """The listener's ``request_headers_timeout``: a request whose headers take longer than
    ``envoy.request_headers_timeout_s`` from their first byte to their last closes its
    connection (slow-headers attack)."""
    return _ms(envoy.request_headers_timeout_s * 1000)


def stream_timeout_reply() -> hcm_pb2.ResponseMapper:
    """A stream idle timeout before response headers is answered 504, so gRPC clients
    get UNAVAILABLE "stream timeout" (retryable) whether or not the client had
    half-closed (Envoy answers 408, gRPC UNKNOWN, while the request is still open, as
    a tritonclient stream is). After response headers Envoy can only reset the stream."""
    return hcm_pb2.ResponseMapper(
        filter=accesslog_pb2.AccessLogFilter(
            response_flag_filter=accesslog_pb2.ResponseFlagFilter(flags=["SI"])
        ),
        status_code=wrappers_pb2.UInt32Value(value=504),
    )
