# Grafana: Caravan's dashboards over Prometheus.
# Rendered by `caravan render` from the platform spec; do not edit by hand.

job "grafana" {
  namespace   = "default"
  type        = "service"
  datacenters = ["dc1"]
  priority    = 60

  group "grafana" {
    count          = 1
    shutdown_delay = "5s"

    network {
      mode = "host"

      port "http" {
        host_network = "private"
      }
    }

    service {
      name     = "grafana"
      provider = "consul"
      port     = "http"
      tags     = ["caravan", "monitoring"]

      check {
        name     = "grafana-health"
        type     = "http"
        port     = "http"
        path     = "/api/health"
        interval = "10s"
        timeout  = "2s"
      }
    }

    restart {
      attempts = 10
      interval = "5m"
      delay    = "15s"
      mode     = "delay"
    }

    task "grafana" {
      driver       = "docker"
      kill_timeout = "30s"

      config {
        image      = "grafana/grafana-oss:11.1.0"
        entrypoint = ["/bin/sh", "-c"]
        args = [
          "if [ -z \"$GF_SECURITY_ADMIN_PASSWORD\" ] || [ \"$GF_SECURITY_ADMIN_PASSWORD\" = admin ]; then echo 'grafana: refusing to start without an admin password: nomad var put nomad/jobs/grafana GF_SECURITY_ADMIN_PASSWORD=...' >&2; exit 78; fi; exec /run.sh",
        ]
        network_mode = "host"
      }

      env {
        GF_SERVER_HTTP_ADDR   = "${NOMAD_IP_http}"
        GF_SERVER_HTTP_PORT   = "${NOMAD_PORT_http}"
        GF_PATHS_PROVISIONING = "/local/provisioning"
        GF_PATHS_DATA         = "/alloc/data/grafana"
      }

      template {
        destination = "local/prometheus.env"
        change_mode = "restart"
        env         = true
        data        = "{{ range $i, $s := service \"prometheus\" }}{{ if eq $i 0 }}CARAVAN_PROMETHEUS_URL=http://{{ $s.Address }}:{{ $s.Port }}\n{{ end }}{{ end }}"
      }

      template {
        destination = "secrets/grafana.env"
        change_mode = "restart"
        env         = true
        data = <<EOT
{{ range nomadVarList "nomad/jobs/grafana" }}{{ with nomadVar .Path }}{{ range .Tuples }}{{ .K }}={{ .V | toJSON }}
{{ end }}{{ end }}{{ end }}
EOT
      }

      template {
        destination = "local/provisioning/datasources/prometheus.yml"
        change_mode = "restart"
        env         = false
        data = <<EOT
# Rendered by `caravan render` from the platform spec. Do not edit by hand.
apiVersion: 1
datasources:
- name: Prometheus
  uid: caravan-prometheus
  type: prometheus
  access: proxy
  url: $${CARAVAN_PROMETHEUS_URL}
  isDefault: true
  editable: false
  jsonData:
    timeInterval: 15s
EOT
      }

      template {
        destination = "local/provisioning/dashboards/caravan.yml"
        change_mode = "restart"
        env         = false
        data = <<EOT
# Rendered by `caravan render` from the platform spec. Do not edit by hand.
apiVersion: 1
providers:
- name: caravan
  orgId: 1
  folder: Caravan
  type: file
  disableDeletion: true
  allowUiUpdates: false
  options:
    path: /local/dashboards
EOT
      }

      template {
        destination = "local/dashboards/caravan-overview.json"
        change_mode = "noop"
        env         = false
        data = <<EOT
{
  "annotations": {},
  "editable": true,
  "fiscalYearStartMonth": 0,
  "graphTooltip": 0,
  "panels": [
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "unit": "short"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 4,
        "w": 6,
        "x": 0,
        "y": 0
      },
      "options": {
        "colorMode": "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {
          "calcs": [
            "lastNotNull"
          ],
          "values": false
        },
        "textMode": "auto"
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "count(ALERTS{alertstate=\"firing\",alertname=~\"Caravan.*\"}) or vector(0)",
          "legendFormat": "__auto",
          "refId": "A"
        }
      ],
      "title": "Firing Caravan alerts",
      "transformations": [],
      "transparent": false,
      "type": "stat"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "unit": "reqps"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 4,
        "w": 6,
        "x": 6,
        "y": 0
      },
      "options": {
        "colorMode": "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {
          "calcs": [
            "lastNotNull"
          ],
          "values": false
        },
        "textMode": "auto"
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "sum(model:caravan_requests:rate1m)",
          "legendFormat": "__auto",
          "refId": "A"
        }
      ],
      "title": "Requests/s (all models)",
      "transformations": [],
      "transparent": false,
      "type": "stat"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "unit": "short"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 4,
        "w": 6,
        "x": 12,
        "y": 0
      },
      "options": {
        "colorMode": "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {
          "calcs": [
            "lastNotNull"
          ],
          "values": false
        },
        "textMode": "auto"
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "sum(model:caravan_output_tokens:rate1m)",
          "legendFormat": "__auto",
          "refId": "A"
        }
      ],
      "title": "Output tokens/s (all models)",
      "transformations": [],
      "transparent": false,
      "type": "stat"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "unit": "short"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 4,
        "w": 6,
        "x": 18,
        "y": 0
      },
      "options": {
        "colorMode": "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {
          "calcs": [
            "lastNotNull"
          ],
          "values": false
        },
        "textMode": "auto"
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "sum(caravan_xds_connected_clients)",
          "legendFormat": "__auto",
          "refId": "A"
        }
      ],
      "title": "Connected Envoys",
      "transformations": [],
      "transparent": false,
      "type": "stat"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "reqps"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 0,
        "y": 4
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "model:caravan_requests:rate1m",
          "legendFormat": "{{ "{{" }}model{{ "}}" }}",
          "refId": "A"
        }
      ],
      "title": "Requests/s by model",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "percentunit"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 12,
        "y": 4
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "model:caravan_errors:ratio_rate5m",
          "legendFormat": "{{ "{{" }}model{{ "}}" }}",
          "refId": "A"
        }
      ],
      "title": "Error ratio by model",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "s"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 0,
        "y": 12
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "model:caravan_ttft_seconds:p95",
          "legendFormat": "{{ "{{" }}model{{ "}}" }}",
          "refId": "A"
        }
      ],
      "title": "p95 TTFT by model",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "s"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 12,
        "y": 12
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "model:caravan_e2e_latency_seconds:p95",
          "legendFormat": "{{ "{{" }}model{{ "}}" }}",
          "refId": "A"
        }
      ],
      "title": "p95 end-to-end latency by model",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "short"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 0,
        "y": 20
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "model:caravan_output_tokens:rate1m",
          "legendFormat": "{{ "{{" }}model{{ "}}" }}",
          "refId": "A"
        }
      ],
      "title": "Output tokens/s by model",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "short"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 12,
        "y": 20
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "model:caravan_inflight_per_replica:avg",
          "legendFormat": "{{ "{{" }}model{{ "}}" }}",
          "refId": "A"
        }
      ],
      "title": "In-flight per replica by model",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "reqps"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 0,
        "y": 28
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "model:caravan_instream_failures:rate1m",
          "legendFormat": "{{ "{{" }}model{{ "}}" }}",
          "refId": "A"
        }
      ],
      "title": "In-stream failures/s by model",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "short"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 12,
        "y": 28
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "model:caravan_replicas_healthy:max",
          "legendFormat": "{{ "{{" }}model{{ "}}" }} healthy",
          "refId": "A"
        },
        {
          "expr": "model:caravan_replicas_unhealthy:max",
          "legendFormat": "{{ "{{" }}model{{ "}}" }} failing health checks",
          "refId": "B"
        }
      ],
      "title": "Healthy and unhealthy replicas by model",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "short"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 0,
        "y": 36
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "max by (model) (caravan_autoscaler_desired_count)",
          "legendFormat": "{{ "{{" }}model{{ "}}" }}",
          "refId": "A"
        }
      ],
      "title": "Desired replicas by model",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "short"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 12,
        "y": 36
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "sum by (type) (rate(caravan_xds_pushes_total[$__rate_interval]))",
          "legendFormat": "{{ "{{" }}type{{ "}}" }}",
          "refId": "A"
        }
      ],
      "title": "xDS pushes/s",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "description": "Envoy rejected a config; it keeps the previous one.",
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "short"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 0,
        "y": 44
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "sum by (type) (increase(caravan_xds_nacks_total[$__rate_interval]))",
          "legendFormat": "{{ "{{" }}type{{ "}}" }}",
          "refId": "A"
        }
      ],
      "title": "xDS NACKs",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "s"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 12,
        "y": 44
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "histogram_quantile(0.99, sum by (le) (rate(caravan_xds_snapshot_build_seconds_bucket[$__rate_interval])))",
          "legendFormat": "p99",
          "refId": "A"
        }
      ],
      "title": "Snapshot build p99",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "short"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 0,
        "y": 52
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "sum(rate(caravan_discovery_errors_total[$__rate_interval]))",
          "legendFormat": "errors",
          "refId": "A"
        },
        {
          "expr": "sum(rate(caravan_discovery_skipped_entries_total[$__rate_interval]))",
          "legendFormat": "skipped entries",
          "refId": "B"
        }
      ],
      "title": "Discovery errors/s",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    }
  ],
  "refresh": "10s",
  "schemaVersion": 36,
  "style": "dark",
  "tags": [
    "caravan"
  ],
  "templating": {},
  "time": {
    "from": "now-30m",
    "to": "now"
  },
  "timezone": "browser",
  "title": "Caravan: platform overview",
  "uid": "caravan-overview"
}
EOT
      }

      template {
        destination = "local/dashboards/caravan-model.json"
        change_mode = "noop"
        env         = false
        data = <<EOT
{
  "annotations": {
    "list": [
      {
        "datasource": {
          "type": "prometheus",
          "uid": "caravan-prometheus"
        },
        "enable": true,
        "expr": "sum by (model, direction) (increase(caravan_autoscaler_decisions_total{model=\"$model\",action=\"scaled\"}[1m])) > 0",
        "hide": false,
        "iconColor": "orange",
        "name": "Scaling decisions"
      }
    ]
  },
  "editable": true,
  "fiscalYearStartMonth": 0,
  "graphTooltip": 0,
  "panels": [
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "unit": "reqps"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 4,
        "w": 6,
        "x": 0,
        "y": 0
      },
      "options": {
        "colorMode": "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {
          "calcs": [
            "lastNotNull"
          ],
          "values": false
        },
        "textMode": "auto"
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "model:caravan_requests:rate1m{model=\"$model\"}",
          "legendFormat": "__auto",
          "refId": "A"
        }
      ],
      "title": "Requests/s",
      "transformations": [],
      "transparent": false,
      "type": "stat"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "unit": "percentunit"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 4,
        "w": 6,
        "x": 6,
        "y": 0
      },
      "options": {
        "colorMode": "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {
          "calcs": [
            "lastNotNull"
          ],
          "values": false
        },
        "textMode": "auto"
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "model:caravan_errors:ratio_rate5m{model=\"$model\"}",
          "legendFormat": "__auto",
          "refId": "A"
        }
      ],
      "title": "Error ratio (5m)",
      "transformations": [],
      "transparent": false,
      "type": "stat"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "unit": "s"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 4,
        "w": 6,
        "x": 12,
        "y": 0
      },
      "options": {
        "colorMode": "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {
          "calcs": [
            "lastNotNull"
          ],
          "values": false
        },
        "textMode": "auto"
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "model:caravan_ttft_seconds:p95{model=\"$model\"}",
          "legendFormat": "__auto",
          "refId": "A"
        }
      ],
      "title": "p95 TTFT",
      "transformations": [],
      "transparent": false,
      "type": "stat"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "unit": "short"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 4,
        "w": 6,
        "x": 18,
        "y": 0
      },
      "options": {
        "colorMode": "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {
          "calcs": [
            "lastNotNull"
          ],
          "values": false
        },
        "textMode": "auto"
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "model:caravan_replicas_healthy:max{model=\"$model\"}",
          "legendFormat": "__auto",
          "refId": "A"
        }
      ],
      "title": "Healthy replicas",
      "transformations": [],
      "transparent": false,
      "type": "stat"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "description": "Inference requests counted by the replicas; gRPC calls (a stream is one call) counted by Envoy.",
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "reqps"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 0,
        "y": 4
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "model:caravan_requests:rate1m{model=\"$model\"}",
          "legendFormat": "inference requests (replicas)",
          "refId": "A"
        },
        {
          "expr": "model:caravan_envoy_requests:rate1m{model=\"$model\"}",
          "legendFormat": "gRPC calls (Envoy)",
          "refId": "B"
        }
      ],
      "title": "Requests/s",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "description": "(Triton failures + Envoy 5xx + in-stream failures) / all requests.",
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "percentunit"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 12,
        "y": 4
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "model:caravan_errors:ratio_rate5m{model=\"$model\"}",
          "legendFormat": "error ratio (5m)",
          "refId": "A"
        },
        {
          "expr": "model:caravan_slo_error_ratio:constant{model=\"$model\"}",
          "legendFormat": "SLO",
          "refId": "B"
        }
      ],
      "title": "Errors",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "s"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 0,
        "y": 12
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "model:caravan_e2e_latency_seconds:p50{model=\"$model\"}",
          "legendFormat": "p50",
          "refId": "A"
        },
        {
          "expr": "model:caravan_e2e_latency_seconds:p95{model=\"$model\"}",
          "legendFormat": "p95",
          "refId": "B"
        },
        {
          "expr": "model:caravan_e2e_latency_seconds:p99{model=\"$model\"}",
          "legendFormat": "p99",
          "refId": "C"
        },
        {
          "expr": "model:caravan_slo_e2e_seconds:constant{model=\"$model\"}",
          "legendFormat": "SLO (p95)",
          "refId": "D"
        }
      ],
      "title": "End-to-end latency",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "s"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 12,
        "y": 12
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "model:caravan_ttft_seconds:p50{model=\"$model\"}",
          "legendFormat": "p50",
          "refId": "A"
        },
        {
          "expr": "model:caravan_ttft_seconds:p95{model=\"$model\"}",
          "legendFormat": "p95",
          "refId": "B"
        },
        {
          "expr": "model:caravan_ttft_seconds:p99{model=\"$model\"}",
          "legendFormat": "p99",
          "refId": "C"
        },
        {
          "expr": "model:caravan_slo_ttft_seconds:constant{model=\"$model\"}",
          "legendFormat": "SLO (p95)",
          "refId": "D"
        }
      ],
      "title": "Time to first token",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "short"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 0,
        "y": 20
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "model:caravan_output_tokens:rate1m{model=\"$model\"}",
          "legendFormat": "output",
          "refId": "A"
        },
        {
          "expr": "model:caravan_prompt_tokens:rate1m{model=\"$model\"}",
          "legendFormat": "prompt",
          "refId": "B"
        }
      ],
      "title": "Tokens/s",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "description": "Envoy's active + pending requests on model-$model (a stream is one request until it ends); pending ones wait for a connection or a circuit-breaker slot.",
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "short"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 12,
        "y": 20
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "model:caravan_inflight:sum{model=\"$model\"}",
          "legendFormat": "in flight (Envoy)",
          "refId": "A"
        },
        {
          "expr": "model:caravan_inflight_per_replica:avg{model=\"$model\"}",
          "legendFormat": "per healthy replica",
          "refId": "B"
        },
        {
          "expr": "sum(envoy_cluster_upstream_rq_pending_active{envoy_cluster_name=\"model-$model\"})",
          "legendFormat": "pending in Envoy",
          "refId": "C"
        }
      ],
      "title": "In-flight requests",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "short"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 0,
        "y": 28
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "max(caravan_autoscaler_desired_count{model=\"$model\"})",
          "legendFormat": "desired",
          "refId": "A"
        },
        {
          "expr": "max(caravan_autoscaler_current_count{model=\"$model\"})",
          "legendFormat": "running (autoscaler)",
          "refId": "B"
        },
        {
          "expr": "model:caravan_replicas_healthy:max{model=\"$model\"}",
          "legendFormat": "healthy (Envoy)",
          "refId": "C"
        },
        {
          "expr": "model:caravan_replicas_unhealthy:max{model=\"$model\"}",
          "legendFormat": "failing health checks (Envoy)",
          "refId": "D"
        },
        {
          "expr": "model:caravan_replicas_max:constant{model=\"$model\"}",
          "legendFormat": "max",
          "refId": "E"
        }
      ],
      "title": "Replicas: desired vs running",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "short"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 12,
        "y": 28
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "caravan_autoscaler_check_value{model=\"$model\"}",
          "legendFormat": "{{ "{{" }}check{{ "}}" }}",
          "refId": "A"
        }
      ],
      "title": "Autoscaler check values",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "description": "Engine errors go to the client inside a gRPC-OK stream: requests handed over minus requests finished, 1m. Ramps in traffic show as a small gap too.",
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "reqps"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 0,
        "y": 36
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "model:caravan_request_success:rate1m{model=\"$model\"}",
          "legendFormat": "handed to the engine (Triton success)",
          "refId": "A"
        },
        {
          "expr": "model:caravan_engine_finished:rate1m{model=\"$model\"}",
          "legendFormat": "finished (vLLM e2e count)",
          "refId": "B"
        },
        {
          "expr": "model:caravan_instream_failures:rate1m{model=\"$model\"}",
          "legendFormat": "in-stream failures",
          "refId": "C"
        }
      ],
      "title": "In-stream failures",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "description": "Reported by Triton on GPUs; empty for the simulator.",
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "percentunit"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 12,
        "y": 36
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "avg by (replica, gpu_uuid) (nv_gpu_utilization{caravan_model=\"$model\"})",
          "legendFormat": "{{ "{{" }}replica{{ "}}" }} {{ "{{" }}gpu_uuid{{ "}}" }}",
          "refId": "A"
        }
      ],
      "title": "GPU utilisation",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "short"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 0,
        "y": 44
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "sum by (type) (rate(caravan_xds_pushes_total[$__rate_interval]))",
          "legendFormat": "{{ "{{" }}type{{ "}}" }}",
          "refId": "A"
        }
      ],
      "title": "xDS pushes/s",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    },
    {
      "datasource": {
        "type": "prometheus",
        "uid": "caravan-prometheus"
      },
      "description": "Envoy rejected a config; it keeps the previous one.",
      "fieldConfig": {
        "defaults": {
          "custom": {
            "fillOpacity": 10,
            "lineWidth": 1
          },
          "unit": "short"
        },
        "overrides": []
      },
      "gridPos": {
        "h": 8,
        "w": 12,
        "x": 12,
        "y": 44
      },
      "options": {
        "legend": {
          "calcs": [],
          "displayMode": "list",
          "placement": "bottom",
          "showLegend": true
        },
        "tooltip": {
          "mode": "multi",
          "sort": "asc"
        }
      },
      "repeatDirection": "h",
      "targets": [
        {
          "expr": "sum by (type) (increase(caravan_xds_nacks_total[$__rate_interval]))",
          "legendFormat": "{{ "{{" }}type{{ "}}" }}",
          "refId": "A"
        }
      ],
      "title": "xDS NACKs",
      "transformations": [],
      "transparent": false,
      "type": "timeseries"
    }
  ],
  "refresh": "10s",
  "schemaVersion": 36,
  "style": "dark",
  "tags": [
    "caravan"
  ],
  "templating": {
    "list": [
      {
        "auto": false,
        "auto_count": 30,
        "auto_min": "10s",
        "datasource": {
          "type": "prometheus",
          "uid": "caravan-prometheus"
        },
        "hide": 0,
        "id": "00000000-0000-0000-0000-000000000000",
        "includeAll": false,
        "label": "Model",
        "multi": false,
        "name": "model",
        "query": "label_values(model:caravan_slo_ttft_seconds:constant, model)",
        "refresh": 1,
        "skipUrlSync": false,
        "sort": 1,
        "type": "query"
      }
    ]
  },
  "time": {
    "from": "now-30m",
    "to": "now"
  },
  "timezone": "browser",
  "title": "Caravan: model",
  "uid": "caravan-model"
}
EOT
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }
}
