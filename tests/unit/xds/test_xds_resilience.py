"""What Envoy gets to cut off hung and gray replicas (caravan.xds.resilience): keepalive,
health checks and connection closing, outlier detection, stream timeouts and retries."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from xds_unit_helpers import make_spec, unpack

from caravan.spec import EnvoySpec, SpecError, parse_spec
from caravan.xds import resilience
from caravan.xds import resources as res

SPEC = make_spec()


def _route(name: str, spec: Any = SPEC) -> route_components_pb2.Route:
    return next(r for r in res.route_configuration(spec).virtual_hosts[0].routes if r.name == name)


def test_model_cluster_keepalive_and_closes_connections_on_health_failure() -> None:
    c = res.cluster(SPEC.model("alpha"))
    opts = unpack(c.typed_extension_protocol_options[res.HTTP_OPTIONS_KEY],
                  http_protocol_options_pb2.HttpProtocolOptions)
    keepalive = opts.explicit_http_config.http2_protocol_options.connection_keepalive
    assert keepalive.interval.ToMilliseconds() == resilience.KEEPALIVE_INTERVAL_MS == 2000
    assert keepalive.timeout.ToMilliseconds() == resilience.KEEPALIVE_TIMEOUT_MS == 2000
    assert c.close_connections_on_host_health_failure
    (hc,) = c.health_checks
    # a stopped replica misses 2 checks of 1 s (1 s timeout each): unhealthy in ~3 s
    assert (hc.interval.ToMilliseconds(), hc.timeout.ToMilliseconds(), hc.unhealthy_threshold.value) == (
        1000, 1000, 2)


def test_outlier_detection_ejects_on_timeouts_never_the_whole_cluster() -> None:
    od = res.cluster(SPEC.model("alpha")).outlier_detection
    assert od.consecutive_gateway_failure.value == 3
    assert od.enforcing_consecutive_gateway_failure.value == 100
    assert not od.split_external_local_origin_errors, "a per-try timeout must count as a 504"
    assert 0 < od.max_ejection_percent.value < 100
    assert od.HasField("successful_active_health_check_uneject_host")
    assert not od.successful_active_health_check_uneject_host.value, "a gray replica passes health checks"


@pytest.mark.parametrize(("route", "retries"), [("alpha-stream", 2), ("beta-stream", 0), ("default-stream", 2)],
                         ids=["retries", "no-retries-still-timed", "default-model"])
def test_stream_routes_idle_timeout_and_per_try_timeout(route: str, retries: int) -> None:
    action = _route(route).route
    assert action.idle_timeout.ToSeconds() == 10  # spec default stream_idle_timeout_s
    p = action.retry_policy
    assert p.per_try_timeout.ToSeconds() == 5  # spec default per_try_timeout_s
    assert p.num_retries.value == retries
    assert set(p.retry_on.split(",")) >= {"reset", "unavailable", "connect-failure", "refused-stream"}
    assert [h.name for h in p.retry_host_predicate] == ["envoy.retry_host_predicates.previous_hosts"]


def test_unary_route_keeps_its_overall_timeout_only() -> None:
    action = _route("alpha-unary").route
    assert not action.HasField("idle_timeout")
    assert not action.retry_policy.HasField("per_try_timeout")
    assert action.timeout.ToSeconds() == 30


def test_per_model_timeouts_come_from_the_spec() -> None:
    spec = make_spec(models=[{"name": "alpha", "engine": {"model": "m"},
                              "routing": {"per_try_timeout_s": 2.5, "stream_idle_timeout_s": 45}}])
    action = _route("alpha-stream", spec).route
    assert action.idle_timeout.ToMilliseconds() == 45_000
    assert action.retry_policy.per_try_timeout.ToMilliseconds() == 2500


def test_idle_timeout_must_exceed_the_per_try_timeout() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({"models": [{"name": "a", "engine": {"model": "m"},
                                "routing": {"per_try_timeout_s": 10, "stream_idle_timeout_s": 10}}]})
    assert "models[0].routing" in str(err.value) and "must be above per_try_timeout_s (10)" in str(err.value)


def test_stream_duration_bounds_a_busy_stream_and_caps_grpc_timeout() -> None:
    spec = make_spec(models=[{"name": "alpha", "engine": {"model": "m"},
                              "routing": {"max_stream_duration_s": 90, "unary_timeout_s": 7}}])
    stream = _route("alpha-stream", spec).route.max_stream_duration
    assert stream.max_stream_duration.ToSeconds() == 90
    assert stream.grpc_timeout_header_max.ToSeconds() == 90, "a client's grpc-timeout cannot lift it"
    unary = _route("alpha-unary", spec).route.max_stream_duration
    assert (unary.max_stream_duration.ToSeconds(), unary.grpc_timeout_header_max.ToSeconds()) == (7, 7)


def test_stream_duration_must_exceed_the_other_timeouts_all_errors_at_once() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({"models": [{"name": "a", "engine": {"model": "m"},
                                "routing": {"per_try_timeout_s": 10, "stream_idle_timeout_s": 10,
                                            "max_stream_duration_s": 8}}]})
    text = str(err.value)
    assert "models[0].routing" in text
    assert "stream_idle_timeout_s: must be above per_try_timeout_s (10)" in text
    assert "max_stream_duration_s: must be above stream_idle_timeout_s (10)" in text


def test_request_headers_timeout_on_the_listener() -> None:
    assert res.http_connection_manager(SPEC).request_headers_timeout.ToSeconds() == (
        EnvoySpec.model_fields["request_headers_timeout_s"].default)
    spec = make_spec(envoy={"request_headers_timeout_s": 2.5})
    assert res.http_connection_manager(spec).request_headers_timeout.ToMilliseconds() == 2500


@pytest.mark.parametrize("security", [None, {"max_request_bytes": 4096}], ids=["plain", "with-size-limit"])
def test_stream_idle_timeout_local_reply_is_504_so_grpc_unavailable(security: Any) -> None:
    spec = make_spec(security=security) if security else SPEC
    hcm = res.http_connection_manager(spec)
    mapper = hcm.local_reply_config.mappers[-1]
    assert list(mapper.filter.response_flag_filter.flags) == ["SI"]
    assert mapper.status_code.value == 504
    assert len(hcm.local_reply_config.mappers) == (2 if security else 1)


def test_replicas_accept_envoys_keepalive_pings(tmp_path: Any) -> None:
    """tritonserver (Nomad job and local launcher) accepts a PING as often as Envoy sends
    one (every KEEPALIVE_INTERVAL_MS less Envoy's 15 % jitter), with or without calls."""
    from caravan.nomad.triton_job import tritonserver_args
    from caravan.render.triton import KEEPALIVE_ARGS
    from caravan.triton.launcher import ReplicaPlan

    flags = dict(a.split("=", 1) for a in KEEPALIVE_ARGS)
    assert flags["--grpc-keepalive-permit-without-calls"] == "1"
    assert int(flags["--grpc-http2-min-recv-ping-interval-without-data"]) < resilience.KEEPALIVE_INTERVAL_MS * 0.85
    plan = ReplicaPlan(tmp_path, SPEC.model("alpha"), 9001, 9002)
    for argv in (plan.argv(tmp_path / "m", tmp_path / "b"), tritonserver_args(SPEC, SPEC.model("alpha"))):
        assert set(KEEPALIVE_ARGS) <= set(argv)
