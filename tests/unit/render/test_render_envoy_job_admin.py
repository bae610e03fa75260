"""The rendered Envoy job keeps Envoy's admin on loopback (issue 17, High #1): no
Nomad port or Consul service for it; Prometheus and Consul's readiness check reach a
stats-only listener that forwards nothing but ``GET /stats/prometheus`` and ``/ready``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.unit.render.test_render_nomad_templates import render_template

from caravan.nomad import nomad_templates, platform_jobs
from caravan.observability.prometheus import ENVOY_SERVICE
from caravan.render import envoy
from caravan.spec import load_spec

SPEC = load_spec("examples/platform.yaml")
ALLOC_ENV = {"NOMAD_IP_stats": "10.0.0.9", "NOMAD_PORT_stats": "25001"}


def _boot() -> dict[str, Any]:
    text = nomad_templates.envoy_bootstrap(SPEC)
    got: dict[str, Any] = json.loads(render_template(text, ALLOC_ENV,
                                                     {"caravan-xds": [("10.0.0.5", 23001)]}))
    return got


def test_admin_is_loopback_only_and_not_a_nomad_port_or_service() -> None:
    job = platform_jobs.envoy_job(SPEC)
    group = job.groups[0]
    assert group.network is not None
    assert [p.label for p in group.network.ports] == ["ingress", "stats"]
    assert all(s.port != "admin" for s in group.services)
    assert _boot()["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1", "port_value": SPEC.envoy.admin_port}
    assert "NOMAD_IP_admin" not in nomad_templates.envoy_bootstrap(SPEC)


def test_prometheus_service_and_ready_check_use_the_stats_port() -> None:
    (service,) = [s for s in platform_jobs.envoy_job(SPEC).groups[0].services
                  if s.name == ENVOY_SERVICE]
    assert service.port == "stats"
    assert [(c.port, c.path) for c in service.checks] == [("stats", "/ready")]


def test_stats_listener_forwards_only_get_of_the_stats_paths() -> None:
    (listener,) = _boot()["static_resources"]["listeners"]
    assert listener["address"]["socket_address"] == {"address": "10.0.0.9", "port_value": 25001}
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["normalize_path"] and hcm["merge_slashes"]
    assert hcm["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert [r["match"]["path"] for r in routes] == ["/stats/prometheus", "/ready"]
    for r in routes:
        assert set(r["match"]) == {"path", "headers"}  # exact path, no prefix or regex
        assert r["match"]["headers"] == [{"name": ":method", "string_match": {"exact": "GET"}}]
        assert r["route"] == {"cluster": envoy.ADMIN_CLUSTER}
    (admin,) = [c for c in _boot()["static_resources"]["clusters"]
                if c["name"] == envoy.ADMIN_CLUSTER]
    ep = admin["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert ep["address"]["socket_address"] == {"address": "127.0.0.1",
                                               "port_value": SPEC.envoy.admin_port}


def test_local_bootstrap_has_no_stats_listener_unless_asked() -> None:
    assert "listeners" not in envoy.bootstrap(SPEC, [("127.0.0.1", 18000)])["static_resources"]


def test_stats_listener_refuses_bad_address_and_port() -> None:
    with pytest.raises(ValueError, match="stats listener: port must be 1-65535, got 0"):
        envoy.stats_listener("127.0.0.1", 0)
    with pytest.raises(ValueError, match="address must not be empty"):
        envoy.stats_listener("", 9902)
