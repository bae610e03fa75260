# Envoy: the single gRPC inference endpoint, configured over ADS.
# Rendered by `caravan render` from the platform spec; do not edit by hand.

job "envoy" {
  namespace   = "default"
  type        = "service"
  datacenters = ["dc1"]
  priority    = 70

  group "envoy" {
    count          = 1
    shutdown_delay = "30s"

    network {
      mode = "host"

      port "ingress" {
        static = 8080
      }

      port "stats" {
        host_network = "private"
      }
    }

    service {
      name     = "caravan-envoy"
      provider = "consul"
      port     = "ingress"
      tags     = ["caravan"]

      check {
        name     = "envoy-ingress-tcp"
        type     = "tcp"
        port     = "ingress"
        interval = "10s"
        timeout  = "2s"
      }
    }

    service {
      name     = "caravan-envoy-admin"
      provider = "consul"
      port     = "stats"
      tags     = ["caravan"]

      check {
        name     = "envoy-ready"
        type     = "http"
        port     = "stats"
        path     = "/ready"
        interval = "10s"
        timeout  = "2s"
      }
    }

    update {
      max_parallel      = 1
      health_check      = "checks"
      min_healthy_time  = "10s"
      healthy_deadline  = "2m"
      progress_deadline = "5m"
      canary            = 0
      auto_promote      = false
      auto_revert       = true
    }

    restart {
      attempts = 10
      interval = "5m"
      delay    = "15s"
      mode     = "delay"
    }

    reschedule {
      delay          = "30s"
      delay_function = "exponential"
      max_delay      = "10m"
      unlimited      = true
    }

    task "envoy" {
      driver       = "docker"
      kill_timeout = "30s"

      config {
        image        = "envoyproxy/envoy:v1.40.0"
        command      = "envoy"
        args         = ["-c", "/local/envoy.json", "--use-dynamic-base-id"]
        network_mode = "host"
      }

      template {
        destination = "local/envoy.json"
        change_mode = "restart"
        env         = false
        data = <<EOT
{
  "node": {
    "id": "caravan-envoy",
    "cluster": "caravan"
  },
  "admin": {
    "address": {
      "socket_address": {
        "address": "127.0.0.1",
        "port_value": 9901
      }
    }
  },
  "dynamic_resources": {
    "ads_config": {
      "api_type": "GRPC",
      "transport_api_version": "V3",
      "grpc_services": [
        {
          "envoy_grpc": {
            "cluster_name": "xds_cluster",
            "retry_policy": {
              "retry_back_off": {
                "base_interval": "0.1s",
                "max_interval": "0.5s"
              }
            }
          }
        }
      ],
      "set_node_on_first_message_only": true
    },
    "cds_config": {
      "ads": {},
      "resource_api_version": "V3"
    },
    "lds_config": {
      "ads": {},
      "resource_api_version": "V3"
    }
  },
  "static_resources": {
    "clusters": [
      {
        "name": "xds_cluster",
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "typed_extension_protocol_options": {
          "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {
              "http2_protocol_options": {
                "connection_keepalive": {
                  "interval": "5s",
                  "timeout": "5s"
                }
              }
            }
          }
        },
        "health_checks": [
          {
            "timeout": "1s",
            "interval": "2s",
            "no_traffic_interval": "2s",
            "unhealthy_threshold": 2,
            "healthy_threshold": 1,
            "grpc_health_check": {}
          }
        ],
        "load_assignment": {
          "cluster_name": "xds_cluster",
          "endpoints": [
            {
              "lb_endpoints": [{{ range $i, $s := service "caravan-xds" }}{{ if $i }}, {{ end }}{{ with $s }}{"endpoint": {"address": {"socket_address": {"address": "{{ .Address }}", "port_value": {{ .Port }} } } } }{{ end }}{{ end }}]
            }
          ]
        }
      },
      {
        "name": "caravan_envoy_admin",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
          "cluster_name": "caravan_envoy_admin",
          "endpoints": [
            {
              "lb_endpoints": [
                {
                  "endpoint": {
                    "address": {
                      "socket_address": {
                        "address": "127.0.0.1",
                        "port_value": 9901
                      }
                    }
                  }
                }
              ]
            }
          ]
        }
      }
    ],
    "listeners": [
      {
        "name": "caravan_envoy_stats",
        "address": {
          "socket_address": {
            "address": "{{ env "NOMAD_IP_stats" }}",
            "port_value": {{ env "NOMAD_PORT_stats" }}
          }
        },
        "ignore_global_conn_limit": true,
        "filter_chains": [
          {
            "filters": [
              {
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                  "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                  "stat_prefix": "caravan_envoy_stats",
                  "normalize_path": true,
                  "merge_slashes": true,
                  "path_with_escaped_slashes_action": "REJECT_REQUEST",
                  "route_config": {
                    "name": "caravan_envoy_stats",
                    "virtual_hosts": [
                      {
                        "name": "caravan_envoy_stats",
                        "domains": [
                          "*"
                        ],
                        "routes": [
                          {
                            "match": {
                              "path": "/stats/prometheus",
                              "headers": [
                                {
                                  "name": ":method",
                                  "string_match": {
                                    "exact": "GET"
                                  }
                                }
                              ]
                            },
                            "route": {
                              "cluster": "caravan_envoy_admin"
                            }
                          },
                          {
                            "match": {
                              "path": "/ready",
                              "headers": [
                                {
                                  "name": ":method",
                                  "string_match": {
                                    "exact": "GET"
                                  }
                                }
                              ]
                            },
                            "route": {
                              "cluster": "caravan_envoy_admin"
                            }
                          }
                        ]
                      }
                    ]
                  },
                  "http_filters": [
                    {
                      "name": "envoy.filters.http.router",
                      "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                      }
                    }
                  ]
                }
              }
            ]
          }
        ]
      }
    ]
  },
  "overload_manager": {
    "resource_monitors": [
      {
        "name": "envoy.resource_monitors.global_downstream_max_connections",
        "typed_config": {
          "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
          "max_active_downstream_connections": 10000
        }
      }
    ]
  }
}
EOT
      }

      resources {
        cpu    = 2000
        memory = 1024
      }
    }
  }
}
