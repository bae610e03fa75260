"""Envoy's connection cap in the rendered bootstrap (issue 17, Low: no connection cap)."""

from __future__ import annotations

from caravan.nomad import nomad_templates
from caravan.render import envoy
from caravan.spec import parse_spec

SPEC = parse_spec({"models": [{"name": "a", "engine": {"model": "m"}}],
                   "envoy": {"max_connections": 2500}})


def test_bootstrap_caps_downstream_connections_from_the_spec() -> None:
    boot = envoy.bootstrap(SPEC, [("127.0.0.1", 18000)])
    (monitor,) = boot["overload_manager"]["resource_monitors"]
    assert monitor["name"] == "envoy.resource_monitors.global_downstream_max_connections"
    assert monitor["typed_config"]["max_active_downstream_connections"] == 2500
    default = parse_spec({"models": [{"name": "a", "engine": {"model": "m"}}]})
    assert envoy.bootstrap(default, [("x", 1)])["overload_manager"] == envoy.connection_cap(10_000)


def test_the_stats_listener_is_exempt_so_monitoring_survives_a_flood() -> None:
    boot = envoy.bootstrap(SPEC, [("x", 1)], stats=("10.0.0.1", 9102))
    (stats,) = boot["static_resources"]["listeners"]
    assert stats["name"] == envoy.STATS_LISTENER and stats["ignore_global_conn_limit"] is True
    assert '"max_active_downstream_connections": 2500' in nomad_templates.envoy_bootstrap(SPEC)
