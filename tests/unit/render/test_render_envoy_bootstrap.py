"""Envoy ADS bootstrap rendering (pure)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from caravan.render.envoy import XDS_CLUSTER, bootstrap, render
from caravan.spec import parse_spec

SPEC = parse_spec(
    {
        "models": [{"name": "alpha", "engine": {"model": "m/a"}}],
        "envoy": {"admin_port": 9911},
        "control_plane": {"xds_port": 18555},
    }
)


def _xds_hosts(boot: dict[str, Any]) -> list[tuple[str, int]]:
    (cluster,) = boot["static_resources"]["clusters"]
    eps = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    return [
        (
            e["endpoint"]["address"]["socket_address"]["address"],
            e["endpoint"]["address"]["socket_address"]["port_value"],
        )
        for e in eps
    ]


@pytest.mark.parametrize(
    ("xds", "delta", "api_type"),
    [
        ([("127.0.0.1", 18000)], False, "GRPC"),
        ([("10.0.0.1", 18000), ("10.0.0.2", 18000)], False, "GRPC"),
        ([("127.0.0.1", 18000)], True, "DELTA_GRPC"),
    ],
    ids=["one-instance", "ha-pair-listed", "delta"],
)
def test_bootstrap_ads_and_xds_cluster(
    xds: list[tuple[str, int]], delta: bool, api_type: str
) -> None:
    boot = bootstrap(SPEC, xds, node_id="n1", cluster="c1", delta=delta)
    assert boot["node"] == {"id": "n1", "cluster": "c1"}
    ads = boot["dynamic_resources"]["ads_config"]
    assert (ads["api_type"], ads["transport_api_version"]) == (api_type, "V3")
    backoff = {"retry_back_off": {"base_interval": "0.1s", "max_interval": "0.5s"}}
    assert ads["grpc_services"] == [{"envoy_grpc": {"cluster_name": XDS_CLUSTER, "retry_policy": backoff}}]
    for key in ("cds_config", "lds_config"):
        assert boot["dynamic_resources"][key] == {"ads": {}, "resource_api_version": "V3"}
    (cluster,) = boot["static_resources"]["clusters"]
    assert cluster["type"] == "STATIC"
    opts = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert "http2_protocol_options" in opts["explicit_http_config"]
    assert "grpc_health_check" in cluster["health_checks"][0]
    assert _xds_hosts(boot) == xds
    assert boot["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 9911,
    }


@pytest.mark.parametrize(
    ("xds", "node_id", "message"),
    [
        ([], "n", "xds: at least one"),
        ([("", 1)], "n", r"xds\[0\]: host"),
        ([("h", 0)], "n", r"xds\[0\]: port must be 1-65535, got 0"),
        ([("h", 1)], "", "node_id"),
    ],
    ids=["no-instances", "empty-host", "bad-port", "empty-node-id"],
)
def test_bad_arguments_are_named(xds: list[tuple[str, int]], node_id: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bootstrap(SPEC, xds, node_id=node_id)


def test_render_is_deterministic_and_points_at_spec_control_plane() -> None:
    files = render(SPEC)
    assert list(files) == ["envoy/envoy.yaml"]
    assert render(SPEC) == files
    boot = yaml.safe_load(files["envoy/envoy.yaml"])
    assert _xds_hosts(boot) == [("127.0.0.1", 18555)]
