"""Pure resource builders: listener, routes, clusters, load assignments."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2, health_check_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from xds_unit_helpers import DRAINING, HEALTHY, UNHEALTHY, make_spec, replica, unpack

from caravan.discovery.types import ReplicaSet
from caravan.spec import Routing
from caravan.xds import resources as res

SPEC = make_spec()


def _routes() -> list[route_components_pb2.Route]:
    return list(res.route_configuration(SPEC).virtual_hosts[0].routes)


def _route(name: str) -> route_components_pb2.Route:
    return next(r for r in _routes() if r.name == name)


@pytest.mark.parametrize(
    ("model", "table", "balance"),
    [("alpha", 1031, 150), ("beta", 65537, None)],
    ids=["alpha-small-table-bounded-load", "beta-default-table-no-bound"],
)
def test_cluster_maglev_and_bounded_load(model: str, table: int, balance: int | None) -> None:
    c = res.cluster(SPEC.model(model))
    assert c.name == f"model-{model}"
    assert c.lb_policy == c.MAGLEV
    assert c.maglev_lb_config.table_size.value == table
    hashing = c.common_lb_config.consistent_hashing_lb_config
    assert hashing.HasField("hash_balance_factor") == (balance is not None)
    if balance is not None:
        assert hashing.hash_balance_factor.value == balance


def test_cluster_is_eds_over_ads_http2_health_checked() -> None:
    c = res.cluster(SPEC.model("alpha"))
    assert c.type == c.EDS
    assert c.eds_cluster_config.eds_config.HasField("ads")
    opts = unpack(
        c.typed_extension_protocol_options[res.HTTP_OPTIONS_KEY],
        http_protocol_options_pb2.HttpProtocolOptions,
    )
    assert opts.explicit_http_config.HasField("http2_protocol_options")
    (hc,) = c.health_checks
    assert hc.HasField("grpc_health_check")
    assert (hc.healthy_threshold.value, hc.unhealthy_threshold.value) == (1, 2)
    assert hc.interval.ToMilliseconds() == res.HEALTH_INTERVAL_MS
    assert c.outlier_detection.consecutive_5xx.value > 0
    assert c.outlier_detection.consecutive_gateway_failure.value > 0
    assert c.circuit_breakers.thresholds[0].max_requests.value == res.CIRCUIT_LIMIT
    assert c.ignore_health_on_host_removal
    assert c.common_lb_config.healthy_panic_threshold.value == 0.0


@pytest.mark.parametrize(
    ("route", "cluster", "header", "value"),
    [
        ("alpha-stream", "model-alpha", "x-session-id", "alpha"),
        ("alpha-unary", "model-alpha", "x-session-id", "alpha"),
        ("beta-stream", "model-beta", "x-user", "beta"),
        ("beta-unary", "model-beta", "x-user", "beta"),
    ],
    ids=["alpha-stream", "alpha-unary", "beta-stream", "beta-unary"],
)
def test_model_routes_match_header_and_hash_session(
    route: str, cluster: str, header: str, value: str
) -> None:
    r = _route(route)
    (m,) = r.match.headers
    assert (m.name, m.string_match.exact) == ("x-model", value)
    assert r.route.cluster == cluster
    assert [h.header.header_name for h in r.route.hash_policy] == [header]


@pytest.mark.parametrize(
    ("route", "timeout_s", "retries"),
    [
        ("alpha-stream", 0, 2),
        ("alpha-unary", 30, 2),
        ("beta-stream", 0, 0),
        ("beta-unary", 120, None),
        ("default-stream", 0, 2),
        ("default-unary", 30, 2),
    ],
    ids=[
        "stream-no-timeout-retries-before-headers",
        "unary-timeout-retries",
        "stream-retries-0-policy-for-its-per-try-timeout",
        "unary-retries-0-no-policy",
        "default-stream",
        "default-unary",
    ],
)
def test_route_timeouts_and_retries(route: str, timeout_s: int, retries: int | None) -> None:
    action = _route(route).route
    assert action.timeout.ToSeconds() == timeout_s
    # the whole stream's bound (routing.max_stream_duration_s's default; unary: its
    # timeout) also caps a client's grpc-timeout
    bound = timeout_s or Routing.model_fields["max_stream_duration_s"].default
    assert action.max_stream_duration.max_stream_duration.ToSeconds() == bound
    assert action.max_stream_duration.grpc_timeout_header_max.ToSeconds() == bound
    assert action.HasField("retry_policy") == (retries is not None)
    if retries is not None:
        p = action.retry_policy
        assert p.retry_on == "unavailable,reset,connect-failure,refused-stream,cancelled"
        assert p.num_retries.value == retries
        assert [h.name for h in p.retry_host_predicate] == [
            "envoy.retry_host_predicates.previous_hosts"
        ]
        stream = route.endswith("-stream")
        assert p.HasField("per_try_timeout") == stream, "only an attempt's wait for its first response"


@pytest.mark.parametrize("route", ["alpha-stream", "alpha-unary", "beta-stream", "beta-unary",
                                   "default-stream", "default-unary"])
def test_model_routes_name_the_upstream_host_in_a_response_header(route: str) -> None:
    (opt,) = _route(route).response_headers_to_add
    assert (opt.header.key, opt.header.value) == ("x-caravan-upstream", "%UPSTREAM_HOST%")
    assert res.UPSTREAM_HOST_HEADER == "x-caravan-upstream"
    assert opt.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def test_unknown_model_reply_names_no_upstream() -> None:
    assert not _route("unknown-model").response_headers_to_add


def test_routes_match_a_custom_model_header() -> None:
    spec = make_spec(envoy={"model_header": "x-llm"})
    routes = {r.name: r for r in res.route_configuration(spec).virtual_hosts[0].routes}
    assert [(h.name, h.string_match.exact) for h in routes["beta-stream"].match.headers] == [
        ("x-llm", "beta")]
    (absent,) = routes["default-stream"].match.headers
    assert (absent.name, absent.present_match) == ("x-llm", False)
    assert "header x-llm;" in routes["unknown-model"].direct_response.body.inline_string


def test_stream_routes_match_the_stream_path_before_unary() -> None:
    names = [r.name for r in _routes()]
    assert names == [
        "alpha-stream",
        "alpha-unary",
        "beta-stream",
        "beta-unary",
        "default-stream",
        "default-unary",
        "unknown-model",
    ]
    assert _route("alpha-stream").match.path == res.STREAM_PATH
    assert _route("alpha-unary").match.prefix == "/"


def test_requests_without_model_header_go_to_default_model() -> None:
    r = _route("default-unary")
    (m,) = r.match.headers
    assert m.name == "x-model" and m.HasField("present_match") and not m.present_match
    assert r.route.cluster == "model-alpha"


def test_unknown_model_gets_a_local_404_naming_known_models() -> None:
    r = _route("unknown-model")
    assert r.direct_response.status == 404
    assert "alpha, beta" in r.direct_response.body.inline_string


def test_listener_hcm_rds_access_log_request_id() -> None:
    lst = res.listener(SPEC)
    assert lst.name == "caravan-grpc"
    assert (lst.address.socket_address.address, lst.address.socket_address.port_value) == (
        "127.0.0.1",
        8080,
    )
    hcm = unpack(lst.filter_chains[0].filters[0].typed_config, hcm_pb2.HttpConnectionManager)
    assert hcm.codec_type == hcm_pb2.HttpConnectionManager.AUTO
    assert hcm.rds.route_config_name == res.ROUTE_CONFIG_NAME and hcm.rds.config_source.HasField(
        "ads"
    )
    assert hcm.generate_request_id.value
    assert [f.name for f in hcm.http_filters] == [
        "envoy.filters.http.header_mutation", "envoy.filters.http.router"]
    log = unpack(hcm.access_log[0].typed_config, stream_pb2.StdoutAccessLog)
    fields = dict(log.log_format.json_format.items())
    for key in (
        "start_time",
        "model",
        "session",
        "upstream_host",
        "response_flags",
        "response_code",
        "grpc_status",
        "duration_ms",
        "request_id",
    ):
        assert key in fields, key
    assert fields["session"] == "%REQ(X-SESSION-ID)%"
    assert fields["session_x-user"] == "%REQ(X-USER)%"


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        (HEALTHY, health_check_pb2.HEALTHY),
        (DRAINING, health_check_pb2.DRAINING),
        (UNHEALTHY, health_check_pb2.UNHEALTHY),
    ],
    ids=["healthy", "draining", "unhealthy"],
)
def test_endpoint_health_status(health: Any, expected: int) -> None:
    cla = res.load_assignment("model-alpha", ReplicaSet.of("alpha", [replica("a", health=health)]))
    assert cla.endpoints[0].lb_endpoints[0].health_status == expected


def test_endpoints_carry_weight_zone_and_id_sorted() -> None:
    rs = ReplicaSet.of(
        "alpha",
        [
            replica("b", port=2, weight=3, zone="z2"),
            replica("a", port=1, zone="z1"),
            replica("c", port=3, zone="z2"),
        ],
    )
    cla = res.load_assignment("model-alpha", rs)
    assert [lle.locality.zone for lle in cla.endpoints] == ["z1", "z2"]
    got = [
        (
            e.endpoint.hostname,
            e.endpoint.address.socket_address.port_value,
            e.load_balancing_weight.value,
        )
        for lle in cla.endpoints
        for e in lle.lb_endpoints
    ]
    assert got == [("a", 1, 1), ("b", 2, 3), ("c", 3, 1)]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (replica("w", weight=0), "replica 'w': weight must be >= 1 (got 0)"),
        (replica("p", port=70000), "replica 'p': port must be 1-65535 (got 70000)"),
    ],
    ids=["weight-0", "port-out-of-range"],
)
def test_bad_replica_is_rejected_with_its_id(bad: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        res.load_assignment("model-alpha", ReplicaSet.of("alpha", [bad]))


def test_empty_or_missing_replica_set_gives_empty_assignment() -> None:
    assert not res.load_assignment("model-x", None).endpoints
    assert not res.load_assignment("model-x", ReplicaSet("x")).endpoints
