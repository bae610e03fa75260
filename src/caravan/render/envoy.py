"""Envoy bootstrap rendering (pure): Envoy learns everything else over ADS.

``bootstrap`` returns the bootstrap as a dict (YAML/JSON-able): the node identity,
the admin listener on 127.0.0.1:``spec.envoy.admin_port``, ADS
(``api_type: GRPC``, ``transport_api_version: V3``) for clusters and listeners, and
one static ``xds_cluster`` (HTTP/2) listing every control-plane instance. The
instances are health-checked over ``grpc.health.v1`` (a control plane reports
SERVING once it has a snapshot), so Envoy's ADS stream fails over to a live,
ready instance without a config change. ``stats=`` adds a listener that exposes
only ``GET /stats/prometheus`` and ``GET /ready`` of the loopback admin (for
Prometheus and Consul on a node address; see ``stats_listener``). With ``spec.security.xds_tls`` the
xds_cluster talks TLS (mTLS with a client certificate) to the control plane.

Start Envoy with ``envoy -c FILE --use-dynamic-base-id`` (or a unique
``--base-id``) so several Envoys on one machine do not clash.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from caravan.spec import PlatformSpec, XdsTls

XDS_CLUSTER = "xds_cluster"
DEFAULT_NODE_ID = "caravan-envoy"
DEFAULT_CLUSTER = "caravan"
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
ADMIN_CLUSTER = "caravan_envoy_admin"
STATS_LISTENER = "caravan_envoy_stats"
STATS_PATHS = ("/stats/prometheus", "/ready")  # all the stats listener forwards to the admin


def _xds_endpoints(xds: Sequence[tuple[str, int]]) -> list[dict[str, Any]]:
    if not xds:
        raise ValueError("xds: at least one control-plane (host, port) is required")
    out = []
    for i, (host, port) in enumerate(xds):
        if not host:
            raise ValueError(f"xds[{i}]: host must not be empty")
        if not 0 < int(port) < 65536:
            raise ValueError(f"xds[{i}]: port must be 1-65535, got {port}")
        out.append(
            {
                "endpoint": {
                    "address": {"socket_address": {"address": host, "port_value": int(port)}}
                }
            }
        )
    return out


def xds_transport_socket(tls: XdsTls) -> dict[str, Any]:
    """The xds_cluster's TLS socket: verify the control plane against ``tls.ca_file``;
    present Envoy's client certificate when configured (mTLS). Paths only."""
    common: dict[str, Any] = {
        "alpn_protocols": ["h2"],
        "validation_context": {"trusted_ca": {"filename": tls.ca_file}},
    }
    if tls.client_cert_file and tls.client_key_file:
        common["tls_certificates"] = [
            {
                "certificate_chain": {"filename": tls.client_cert_file},
                "private_key": {"filename": tls.client_key_file},
            }
        ]
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": common,
        },
    }


def _xds_cluster(xds: Sequence[tuple[str, int]], tls: XdsTls | None = None) -> dict[str, Any]:
    cluster = _plain_xds_cluster(xds)
    if tls is not None:
        cluster["transport_socket"] = xds_transport_socket(tls)
    return cluster


def _plain_xds_cluster(xds: Sequence[tuple[str, int]]) -> dict[str, Any]:
    return {
        "name": XDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
            HTTP_OPTIONS_KEY: {
                "@type": "type.googleapis.com/" + HTTP_OPTIONS_KEY,
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "connection_keepalive": {"interval": "5s", "timeout": "5s"}
                    }
                },
            }
        },
        "health_checks": [
            {
                "timeout": "1s",
                "interval": "2s",
                "no_traffic_interval": "2s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "grpc_health_check": {},
            }
        ],
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": _xds_endpoints(xds)}],
        },
    }


def bootstrap(
    spec: PlatformSpec,
    xds: Sequence[tuple[str, int]],
    node_id: str = DEFAULT_NODE_ID,
    cluster: str = DEFAULT_CLUSTER,
    delta: bool = False,
    stats: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """The ADS bootstrap for one Envoy. ``xds`` lists every control-plane instance;
    ``delta`` selects incremental xDS (``DELTA_GRPC``) instead of state of the world.
    ``stats`` = (address, port) adds the stats-only listener (``stats_listener``) and
    the loopback admin cluster it routes to; the admin itself stays on 127.0.0.1.
    Raises ValueError naming the bad argument (empty list, empty host, bad port)."""
    if not node_id:
        raise ValueError("node_id: must not be empty")
    ads = {"ads": {}, "resource_api_version": "V3"}
    boot: dict[str, Any] = {
        "node": {"id": node_id, "cluster": cluster},
        "admin": {
            "address": {
                "socket_address": {"address": "127.0.0.1", "port_value": spec.envoy.admin_port}
            }
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                # Reconnect fast after a control-plane restart (default backoff grows to 30 s).
                "grpc_services": [{"envoy_grpc": {
                    "cluster_name": XDS_CLUSTER,
                    "retry_policy": {"retry_back_off": {"base_interval": "0.1s", "max_interval": "0.5s"}},
                }}],
                "set_node_on_first_message_only": True,
            },
            "cds_config": dict(ads),
            "lds_config": dict(ads),
        },
        "static_resources": {"clusters": [_xds_cluster(xds, _xds_tls(spec))]},
        "overload_manager": connection_cap(spec.envoy.max_connections),
    }
    if stats is not None:
        static = boot["static_resources"]
        static["clusters"].append(admin_cluster(spec.envoy.admin_port))
        static["listeners"] = [stats_listener(*stats)]
    return boot


def connection_cap(max_connections: int) -> dict[str, Any]:
    """Envoy's overload manager holding at most ``max_connections`` downstream connections
    on every listener at once (``global_downstream_max_connections``): one more is closed as
    soon as it is accepted (``downstream_global_cx_overflow``). Listeners with
    ``ignore_global_conn_limit`` (the stats listener) are not counted or refused."""
    return {"resource_monitors": [{
        "name": "envoy.resource_monitors.global_downstream_max_connections",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
                     "downstream_connections.v3.DownstreamConnectionsConfig",
            "max_active_downstream_connections": int(max_connections)}}]}


def admin_cluster(admin_port: int) -> dict[str, Any]:
    """Static cluster ``ADMIN_CLUSTER``: Envoy's own admin on 127.0.0.1:``admin_port``."""
    if not 0 < int(admin_port) < 65536:
        raise ValueError(f"envoy.admin_port: must be 1-65535, got {admin_port}")
    address = {"socket_address": {"address": "127.0.0.1", "port_value": int(admin_port)}}
    return {
        "name": ADMIN_CLUSTER, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": ADMIN_CLUSTER,
                            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]},
    }


def stats_listener(address: str, port: int) -> dict[str, Any]:
    """Listener ``STATS_LISTENER`` on ``address:port`` that forwards only ``GET`` of
    ``STATS_PATHS`` (exact path, query string allowed) to the loopback admin; every
    other method or path gets 404 from Envoy and never reaches the admin. Paths are
    normalised first and escaped slashes refused, so ``/stats/prometheus/../x`` or
    ``/%2Fquitquitquit`` cannot reach another admin endpoint."""
    if not address:
        raise ValueError("stats listener: address must not be empty")
    if not 0 < int(port) < 65536:
        raise ValueError(f"stats listener: port must be 1-65535, got {port}")
    get = [{"name": ":method", "string_match": {"exact": "GET"}}]
    routes = [{"match": {"path": p, "headers": get}, "route": {"cluster": ADMIN_CLUSTER}}
              for p in STATS_PATHS]
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                 "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": STATS_LISTENER, "normalize_path": True, "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "route_config": {"name": STATS_LISTENER, "virtual_hosts": [
            {"name": STATS_LISTENER, "domains": ["*"], "routes": routes}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    return {
        "name": STATS_LISTENER,
        "address": {"socket_address": {"address": address, "port_value": int(port)}},
        "ignore_global_conn_limit": True,  # Prometheus and Consul reach it during a flood
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                        "typed_config": hcm}]}],
    }


def _xds_tls(spec: PlatformSpec) -> XdsTls | None:
    return None if spec.security is None else spec.security.xds_tls


def render(spec: PlatformSpec) -> dict[str, str]:
    """The checked-in artefact ``envoy/envoy.yaml`` (deterministic text) for ``spec``'s
    control plane address and xDS port."""
    boot = bootstrap(spec, [(spec.control_plane.address, spec.control_plane.xds_port)])
    header = (
        "# Rendered by `caravan render` from the platform spec; do not edit by hand.\n"
        "# Run: envoy -c envoy/envoy.yaml --use-dynamic-base-id\n"
    )
    return {"envoy/envoy.yaml": header + yaml.safe_dump(boot, sort_keys=False)}
