"""Generated Envoy config per ``routing.policy`` (caravan.xds.routing, through
caravan.xds.resources): balancer, hash policies, the prefix key filter, where it runs
and its plugin configuration."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.wasm.v3 import wasm_pb2 as wasm_filter_pb2
from envoy.extensions.wasm.v3 import wasm_pb2
from google.protobuf import wrappers_pb2
from xds_unit_helpers import unpack

from caravan.spec import SpecError, parse_spec
from caravan.wasm import build
from caravan.xds import resources as res
from caravan.xds import routing

POLICIES = ["session", "prefix", "least_request", "round_robin"]


def _spec(policy: str, **routing_extra: Any) -> Any:
    return parse_spec({"models": [
        {"name": "a", "engine": {"model": "m"}, "routing": {"policy": policy, **routing_extra}},
        {"name": "b", "engine": {"model": "m"}},
    ]})


def _routes(spec: Any) -> dict[str, route_components_pb2.Route]:
    return {r.name: r for r in res.route_configuration(spec).virtual_hosts[0].routes}


@pytest.mark.parametrize(("policy", "lb", "hashed"), [
    ("session", cluster_pb2.Cluster.MAGLEV, True),
    ("prefix", cluster_pb2.Cluster.MAGLEV, True),
    ("least_request", cluster_pb2.Cluster.LEAST_REQUEST, False),
    ("round_robin", cluster_pb2.Cluster.ROUND_ROBIN, False),
], ids=POLICIES)
def test_cluster_balancer_per_policy(policy: str, lb: int, hashed: bool) -> None:
    c = res.cluster(_spec(policy).model("a"))
    assert c.lb_policy == lb
    assert c.HasField("maglev_lb_config") == hashed
    assert c.common_lb_config.consistent_hashing_lb_config.HasField("hash_balance_factor") == hashed


@pytest.mark.parametrize(("policy", "expected"), [
    ("session", [("x-session-id", False)]),
    ("prefix", [("x-session-id", True), (routing.PREFIX_KEY_HEADER, False)]),
    ("least_request", []),
    ("round_robin", []),
], ids=POLICIES)
def test_route_hash_policies(policy: str, expected: list[tuple[str, bool]]) -> None:
    routes = _routes(_spec(policy))
    for name in ("a-stream", "a-unary"):
        got = [(h.header.header_name, h.terminal) for h in routes[name].route.hash_policy]
        assert got == expected, name


@pytest.mark.parametrize("policy", ["session", "least_request", "round_robin"])
def test_no_prefix_model_no_prefix_filter(policy: str) -> None:
    spec = _spec(policy)
    names = [f.name for f in res.http_connection_manager(spec).http_filters]
    assert routing.KEY_FILTER not in names
    assert all(not r.typed_per_filter_config for r in _routes(spec).values())


def test_the_key_filter_sits_before_the_router_and_only_prefix_routes_run_it() -> None:
    spec = _spec("prefix", prefix_tokens=48)
    filters = res.http_connection_manager(spec).http_filters
    assert [f.name for f in filters][-2:] == [routing.KEY_FILTER, "envoy.filters.http.router"]
    routes = _routes(spec)
    assert not routes["a-stream"].typed_per_filter_config and not routes["a-unary"].typed_per_filter_config
    for name in ("b-stream", "b-unary", "unknown-model"):
        per = routes[name].typed_per_filter_config
        assert set(per) == {routing.KEY_FILTER}
        assert unpack(per[routing.KEY_FILTER], route_components_pb2.FilterConfig).disabled


def test_the_key_filter_runs_prefixkey_with_every_prefix_model_in_its_configuration() -> None:
    spec = parse_spec({"default_model": "b", "models": [
        {"name": "a", "engine": {"model": "m"}, "routing": {"policy": "prefix", "prefix_tokens": 48}},
        {"name": "b", "engine": {"model": "m"},
         "routing": {"policy": "prefix", "session_header": "x-conversation"}},
        {"name": "c", "engine": {"model": "m"}, "routing": {"policy": "session"}},
    ]})
    (key,) = [f for f in res.http_connection_manager(spec).http_filters if f.name == routing.KEY_FILTER]
    plugin = unpack(key.typed_config, wasm_filter_pb2.Wasm).config
    assert plugin.vm_config.code.local.inline_bytes == build.module_bytes(routing.WASM_MODULE)
    assert plugin.allow_on_headers_stop_iteration.value, "else Envoy withholds the body from the filter"
    assert plugin.failure_policy == wasm_pb2.FAIL_RELOAD, "a failed VM must not fail later requests"
    text = unpack(plugin.configuration, wrappers_pb2.StringValue).value
    assert text.splitlines() == [
        f"key {routing.PREFIX_KEY_HEADER}", f"model_header {spec.envoy.model_header}", "default b",
        "path /inference.GRPCInferenceService/ModelInfer",
        "path /inference.GRPCInferenceService/ModelStreamInfer", f"max_hold {routing.MAX_HOLD_BYTES}",
        "model a 48 x-session-id", f"model b {spec.model('b').routing.prefix_tokens} x-conversation"]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("policy", "random",
     "must be one of 'session', 'prefix', 'least_request' or 'round_robin' (got 'random')"),
    ("prefix_tokens", 0, "must be >= 1 (got 0)"),
], ids=["unknown-policy", "zero-prefix-tokens"])
def test_spec_refuses_bad_routing(field: str, value: Any, message: str) -> None:
    with pytest.raises(SpecError) as err:
        _spec(**{"policy": "session", field: value})
    assert f"models[0].routing.{field}: {message}" in err.value.errors
