"""Generated Envoy config per ``routing.policy`` (caravan.xds.routing, through
caravan.xds.resources): balancer, hash policies, prefix filters and their per-route
switches, the descriptor set and the Lua script."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.common.matching.v3 import extension_matcher_pb2
from envoy.extensions.filters.http.grpc_field_extraction.v3 import config_pb2 as gfe_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from google.protobuf import descriptor_pb2
from xds_unit_helpers import unpack

from caravan.spec import SpecError, parse_spec
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
def test_no_prefix_model_no_prefix_filters(policy: str) -> None:
    spec = _spec(policy)
    names = [f.name for f in res.http_connection_manager(spec).http_filters]
    assert not {routing.FIELDS_FILTER, routing.KEY_FILTER} & set(names)
    assert all(not r.typed_per_filter_config for r in _routes(spec).values())


def test_prefix_filters_sit_before_the_router_and_only_prefix_routes_run_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(routing.MECHANISM_ENV, "lua")
    spec = _spec("prefix", prefix_tokens=48)
    filters = res.http_connection_manager(spec).http_filters
    assert [f.name for f in filters][-3:] == [routing.FIELDS_FILTER, routing.KEY_FILTER,
                                             "envoy.filters.http.router"]
    routes = _routes(spec)
    for name in ("a-stream", "a-unary"):
        per = routes[name].typed_per_filter_config
        assert set(per) == {routing.KEY_FILTER}
        script = unpack(per[routing.KEY_FILTER], lua_pb2.LuaPerRoute).source_code.inline_string
        assert "local MAX_WORDS = 48\n" in script and f'"{routing.PREFIX_KEY_HEADER}"' in script
        assert "@" not in script
    for name in ("b-stream", "b-unary", "unknown-model"):
        per = routes[name].typed_per_filter_config
        assert set(per) == {routing.FIELDS_FILTER, routing.KEY_FILTER}
        assert all(unpack(v, route_components_pb2.FilterConfig).disabled for v in per.values())


def test_field_extraction_config_names_both_methods_and_the_text_fields(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(routing.MECHANISM_ENV, "lua")
    spec = _spec("prefix")
    (fields,) = [f for f in res.http_connection_manager(spec).http_filters if f.name == routing.FIELDS_FILTER]
    wrapped = unpack(fields.typed_config,
                     extension_matcher_pb2.ExtensionWithMatcher)
    config = unpack(wrapped.extension_config.typed_config, gfe_pb2.GrpcFieldExtractionConfig)
    assert sorted(config.extractions_by_method) == sorted(routing.METHODS)
    for extraction in config.extractions_by_method.values():
        assert sorted(extraction.request_field_extractions) == sorted(routing.FIELDS)
    assert config.descriptor_set.inline_bytes == routing.descriptor_set()
    text = str(wrapped.xds_matcher)
    assert "grpc-encoding" in text and "identity" in text and "x-session-id" in text


def test_descriptor_set_declares_the_bytes_fields_as_string() -> None:
    fds = descriptor_pb2.FileDescriptorSet.FromString(routing.descriptor_set())
    types = {(m.name, f.name): f.type for p in fds.file for m in p.message_type for f in m.field}
    string = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    assert types[("ModelInferRequest", "raw_input_contents")] == string
    assert types[("InferTensorContents", "bytes_contents")] == string
    assert types[("ModelInferRequest", "model_name")] == string
    assert {p.package for p in fds.file} == {"inference"}


@pytest.mark.parametrize(("field", "value", "message"), [
    ("policy", "random",
     "must be one of 'session', 'prefix', 'least_request' or 'round_robin' (got 'random')"),
    ("prefix_tokens", 0, "must be >= 1 (got 0)"),
], ids=["unknown-policy", "zero-prefix-tokens"])
def test_spec_refuses_bad_routing(field: str, value: Any, message: str) -> None:
    with pytest.raises(SpecError) as err:
        _spec(**{"policy": "session", field: value})
    assert f"models[0].routing.{field}: {message}" in err.value.errors
