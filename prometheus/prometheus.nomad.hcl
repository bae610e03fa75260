# Prometheus: scrapes replicas, Envoy, control plane.
# Rendered by `caravan render` from the platform spec; do not edit by hand.

job "prometheus" {
  namespace   = "default"
  type        = "service"
  datacenters = ["dc1"]
  priority    = 60

  group "prometheus" {
    count          = 1
    shutdown_delay = "5s"

    network {
      mode = "host"

      port "http" {
        host_network = "private"
      }
    }

    service {
      name     = "prometheus"
      provider = "consul"
      port     = "http"
      tags     = ["caravan", "monitoring"]

      check {
        name     = "prometheus-ready"
        type     = "http"
        port     = "http"
        path     = "/-/ready"
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

    task "prometheus" {
      driver       = "docker"
      kill_timeout = "30s"

      config {
        image = "prom/prometheus:v2.53.0"
        args = [
          "--config.file=/local/prometheus.yml",
          "--storage.tsdb.path=/alloc/data/prometheus",
          "--storage.tsdb.retention.time=15d",
          "--web.listen-address=${NOMAD_ADDR_http}",
        ]
        network_mode = "host"
      }

      template {
        destination = "local/prometheus.yml"
        change_mode = "restart"
        env         = false
        data = <<EOT
# Rendered by `caravan render` from the platform spec. Do not edit by hand.
global:
  scrape_interval: 15s
  evaluation_interval: 15s
rule_files:
- rules/caravan-recording.yml
- rules/caravan-alerts.yml
scrape_configs:
- job_name: triton
  metrics_path: /metrics
  consul_sd_configs:
  - server: 127.0.0.1:8500
    scheme: http
    datacenter: {{ env "NOMAD_DC" }}
    services:
    - triton-llama-3-8b
    - triton-qwen-2-vl-7b
  relabel_configs:
  - source_labels:
    - __meta_consul_health
    regex: passing
    action: keep
  - source_labels:
    - __meta_consul_service_metadata_metrics_port
    regex: ''
    action: drop
  - source_labels:
    - __address__
    - __meta_consul_service_metadata_metrics_port
    regex: (.+):\d+;(\d+)
    replacement: $${1}:$${2}
    target_label: __address__
  - source_labels:
    - __meta_consul_service
    regex: triton\-(.+)
    target_label: caravan_model
  - source_labels:
    - __meta_consul_service_id
    target_label: replica
  - source_labels:
    - __meta_consul_node
    target_label: node
- job_name: envoy
  metrics_path: /stats/prometheus
  consul_sd_configs:
  - server: 127.0.0.1:8500
    scheme: http
    datacenter: {{ env "NOMAD_DC" }}
    services:
    - caravan-envoy-admin
  relabel_configs:
  - source_labels:
    - __meta_consul_health
    regex: passing
    action: keep
  - source_labels:
    - __meta_consul_node
    target_label: node
- job_name: caravan-xds
  metrics_path: /metrics
  consul_sd_configs:
  - server: 127.0.0.1:8500
    scheme: http
    datacenter: {{ env "NOMAD_DC" }}
    services:
    - caravan-xds-admin
  relabel_configs:
  - source_labels:
    - __meta_consul_health
    regex: passing
    action: keep
  - source_labels:
    - __meta_consul_node
    target_label: node
- job_name: caravan-autoscaler
  metrics_path: /metrics
  consul_sd_configs:
  - server: 127.0.0.1:8500
    scheme: http
    datacenter: {{ env "NOMAD_DC" }}
    services:
    - caravan-autoscaler
  relabel_configs:
  - source_labels:
    - __meta_consul_health
    regex: passing
    action: keep
  - source_labels:
    - __meta_consul_node
    target_label: node
EOT
      }

      template {
        destination = "local/rules/caravan-recording.yml"
        change_mode = "restart"
        env         = false
        data = <<EOT
# Rendered by `caravan render` from the platform spec. Do not edit by hand.
groups:
- name: caravan-spec
  rules:
  - record: model:caravan_slo_ttft_seconds:constant
    expr: vector(2)
    labels: &id001
      model: llama-3-8b
  - record: model:caravan_slo_e2e_seconds:constant
    expr: vector(30)
    labels: *id001
  - record: model:caravan_slo_error_ratio:constant
    expr: vector(0.05)
    labels: *id001
  - record: model:caravan_replicas_min:constant
    expr: vector(1)
    labels: *id001
  - record: model:caravan_replicas_max:constant
    expr: vector(4)
    labels: *id001
  - record: model:caravan_slo_ttft_seconds:constant
    expr: vector(2)
    labels: &id002
      model: qwen-2-vl-7b
  - record: model:caravan_slo_e2e_seconds:constant
    expr: vector(30)
    labels: *id002
  - record: model:caravan_slo_error_ratio:constant
    expr: vector(0.05)
    labels: *id002
  - record: model:caravan_replicas_min:constant
    expr: vector(1)
    labels: *id002
  - record: model:caravan_replicas_max:constant
    expr: vector(3)
    labels: *id002
- name: caravan-model
  rules:
  - record: model:caravan_request_success:rate1m
    expr: sum by (model) (rate(nv_inference_request_success[1m]))
  - record: model:caravan_request_failure:rate1m
    expr: sum by (model) (rate(nv_inference_request_failure[1m]))
  - record: model:caravan_requests:rate1m
    expr: (model:caravan_request_success:rate1m or (model:caravan_slo_error_ratio:constant * 0)) + on(model) (model:caravan_request_failure:rate1m or (model:caravan_slo_error_ratio:constant * 0))
  - record: model:caravan_envoy_requests:rate1m
    expr: sum by (model) (label_replace(rate(envoy_cluster_upstream_rq_xx{envoy_cluster_name=~"model-.+"}[1m]), "model", "$1", "envoy_cluster_name", "model-(.+)"))
  - record: model:caravan_request_success:rate5m
    expr: sum by (model) (rate(nv_inference_request_success[5m]))
  - record: model:caravan_request_failure:rate5m
    expr: sum by (model) (rate(nv_inference_request_failure[5m]))
  - record: model:caravan_envoy_5xx:rate5m
    expr: sum by (model) (label_replace(rate(envoy_cluster_upstream_rq_xx{envoy_cluster_name=~"model-.+",envoy_response_code_class="5"}[5m]), "model", "$1", "envoy_cluster_name", "model-(.+)"))
  - record: model:caravan_engine_finished:rate1m
    expr: sum by (model) (rate(vllm:e2e_request_latency_seconds_count[1m]))
  - record: model:caravan_instream_failures:rate1m
    expr: clamp_min(model:caravan_request_success:rate1m - on(model) model:caravan_engine_finished:rate1m, 0)
  - record: model:caravan_engine_finished:rate5m
    expr: sum by (model) (rate(vllm:e2e_request_latency_seconds_count[5m]))
  - record: model:caravan_instream_failures:rate5m
    expr: clamp_min(model:caravan_request_success:rate5m - on(model) model:caravan_engine_finished:rate5m, 0)
  - record: model:caravan_errors:rate5m
    expr: (model:caravan_request_failure:rate5m or (model:caravan_slo_error_ratio:constant * 0)) + on(model) (model:caravan_envoy_5xx:rate5m or (model:caravan_slo_error_ratio:constant * 0)) + on(model) (model:caravan_instream_failures:rate5m or (model:caravan_slo_error_ratio:constant * 0))
  - record: model:caravan_errors:ratio_rate5m
    expr: model:caravan_errors:rate5m / on(model) ((model:caravan_request_failure:rate5m or (model:caravan_slo_error_ratio:constant * 0)) + on(model) (model:caravan_envoy_5xx:rate5m or (model:caravan_slo_error_ratio:constant * 0)) + on(model) (model:caravan_request_success:rate5m or (model:caravan_slo_error_ratio:constant * 0)))
  - record: model:caravan_inflight:sum
    expr: sum by (model) (label_replace(envoy_cluster_upstream_rq_active{envoy_cluster_name=~"model-.+"} + envoy_cluster_upstream_rq_pending_active{envoy_cluster_name=~"model-.+"}, "model", "$1", "envoy_cluster_name", "model-(.+)"))
  - record: model:caravan_replicas_healthy:max
    expr: max by (model) (label_replace(envoy_cluster_membership_healthy{envoy_cluster_name=~"model-.+"}, "model", "$1", "envoy_cluster_name", "model-(.+)"))
  - record: model:caravan_replicas_unhealthy:max
    expr: max by (model) (label_replace(envoy_cluster_membership_total{envoy_cluster_name=~"model-.+"} - envoy_cluster_membership_healthy{envoy_cluster_name=~"model-.+"} - envoy_cluster_membership_degraded{envoy_cluster_name=~"model-.+"} - envoy_cluster_membership_excluded{envoy_cluster_name=~"model-.+"}, "model", "$1", "envoy_cluster_name", "model-(.+)"))
  - record: model:caravan_inflight_per_replica:avg
    expr: model:caravan_inflight:sum / on(model) clamp_min(model:caravan_replicas_healthy:max, 1)
  - record: model:caravan_ttft_seconds:p50
    expr: histogram_quantile(0.5, sum by (model, le) (rate(vllm:time_to_first_token_seconds_bucket[5m])))
  - record: model:caravan_ttft_seconds:p95
    expr: histogram_quantile(0.95, sum by (model, le) (rate(vllm:time_to_first_token_seconds_bucket[5m])))
  - record: model:caravan_ttft_seconds:p99
    expr: histogram_quantile(0.99, sum by (model, le) (rate(vllm:time_to_first_token_seconds_bucket[5m])))
  - record: model:caravan_e2e_latency_seconds:p50
    expr: histogram_quantile(0.5, sum by (model, le) (rate(vllm:e2e_request_latency_seconds_bucket[5m])))
  - record: model:caravan_e2e_latency_seconds:p95
    expr: histogram_quantile(0.95, sum by (model, le) (rate(vllm:e2e_request_latency_seconds_bucket[5m])))
  - record: model:caravan_e2e_latency_seconds:p99
    expr: histogram_quantile(0.99, sum by (model, le) (rate(vllm:e2e_request_latency_seconds_bucket[5m])))
  - record: model:caravan_output_tokens:rate1m
    expr: sum by (model) (rate(vllm:generation_tokens_total[1m]))
  - record: model:caravan_prompt_tokens:rate1m
    expr: sum by (model) (rate(vllm:prompt_tokens_total[1m]))
EOT
      }

      template {
        destination = "local/rules/caravan-alerts.yml"
        change_mode = "restart"
        env         = false
        data = <<EOT
# Rendered by `caravan render` from the platform spec. Do not edit by hand.
groups:
- name: caravan-alerts
  rules:
  - alert: CaravanTTFTAboveSLO
    expr: model:caravan_ttft_seconds:p95 > on(model) model:caravan_slo_ttft_seconds:constant
    for: 5m
    labels:
      severity: warning
    annotations:
      summary: p95 time to first token of {{ "{{" }} $labels.model {{ "}}" }} is above its SLO
      description: 'p95 TTFT of {{ "{{" }} $labels.model {{ "}}" }} over 5m has exceeded slo.ttft_ms for 5m: add replicas or check in-flight requests per replica.'
  - alert: CaravanE2ELatencyAboveSLO
    expr: model:caravan_e2e_latency_seconds:p95 > on(model) model:caravan_slo_e2e_seconds:constant
    for: 5m
    labels:
      severity: warning
    annotations:
      summary: p95 end-to-end latency of {{ "{{" }} $labels.model {{ "}}" }} is above its SLO
      description: p95 request latency of {{ "{{" }} $labels.model {{ "}}" }} over 5m has exceeded slo.e2e_ms for 5m.
  - alert: CaravanErrorRatioHigh
    expr: model:caravan_errors:ratio_rate5m > on(model) model:caravan_slo_error_ratio:constant
    for: 5m
    labels:
      severity: critical
    annotations:
      summary: '{{ "{{" }} $labels.model {{ "}}" }} fails more requests than its SLO allows'
      description: 'Failed inference requests of {{ "{{" }} $labels.model {{ "}}" }} (Triton failures, Envoy 5xx, and in-stream failures: requests handed to the engine that did not finish) over 5m have exceeded slo.error_ratio for 5m.'
  - alert: CaravanNoHealthyReplicas
    expr: (model:caravan_replicas_min:constant > 0 or on(model) max by (model) (caravan_autoscaler_desired_count) > 0) unless on(model) (model:caravan_replicas_healthy:max > 0)
    for: 1m
    labels:
      severity: critical
    annotations:
      summary: '{{ "{{" }} $labels.model {{ "}}" }} has no healthy replica in Envoy'
      description: 'Envoy reports no healthy endpoint for model-{{ "{{" }} $labels.model {{ "}}" }} (or reports nothing) while the spec or the autoscaler wants replicas: requests fail with 503.'
  - alert: CaravanReplicaUnhealthy
    expr: model:caravan_replicas_unhealthy:max > 0
    for: 30s
    labels:
      severity: warning
    annotations:
      summary: A replica of {{ "{{" }} $labels.model {{ "}}" }} fails Envoy's health check
      description: 'Envoy has kept a replica of model-{{ "{{" }} $labels.model {{ "}}" }} that it finds unhealthy for 30s (gRPC health NOT_SERVING, unreachable, or ejected as an outlier), while Consul still lists it: Nomad will not restart it. Check the replica''s Consul checks and restart the allocation.'
  - alert: CaravanReplicaRestarted
    expr: sum by (model) (resets(nv_inference_request_success{job="triton"}[10m])) > 0
    for: 0m
    labels:
      severity: warning
    annotations:
      summary: A replica of {{ "{{" }} $labels.model {{ "}}" }} restarted in place in the last 10m
      description: 'Triton''s request counter of a {{ "{{" }} $labels.model {{ "}}" }} replica was reset in the last 10m: the replica restarted in place, after a dead vLLM engine (model-ready check), a crash or an OOM kill. Check the allocation''s events and the replica''s log.'
  - alert: CaravanXdsNack
    expr: (sum by (type) (increase(caravan_xds_nacks_total[5m])) > 0) or (sum by (type) (caravan_xds_nacks_total) > 0 unless sum by (type) (caravan_xds_nacks_total offset 5m))
    for: 0m
    labels:
      severity: warning
    annotations:
      summary: Envoy rejected (NACKed) {{ "{{" }} $labels.type {{ "}}" }} config from the control plane
      description: An Envoy NACKed {{ "{{" }} $labels.type {{ "}}" }} in the last 5m; it keeps its previous config. See the control plane's log for the error_detail.
  - alert: CaravanAutoscalerPinnedAtMax
    expr: max by (model) (caravan_autoscaler_desired_count) >= on(model) model:caravan_replicas_max:constant
    for: 15m
    labels:
      severity: warning
    annotations:
      summary: The autoscaler has wanted the maximum replicas of {{ "{{" }} $labels.model {{ "}}" }} for 15m
      description: '{{ "{{" }} $labels.model {{ "}}" }} is at replicas.max and may need more: raise replicas.max or add capacity.'
  - alert: CaravanReplicaCountFlapping
    expr: (max by (model) (changes(caravan_autoscaler_desired_count[30m])) >= 4) and on(model) (max by (model) (changes(caravan_autoscaler_desired_count[30m])) >= 2 * max by (model) (max_over_time(caravan_autoscaler_desired_count[30m]) - min_over_time(caravan_autoscaler_desired_count[30m])))
    for: 0m
    labels:
      severity: warning
    annotations:
      summary: The desired replica count of {{ "{{" }} $labels.model {{ "}}" }} is flapping
      description: 'The desired count of {{ "{{" }} $labels.model {{ "}}" }} changed at least 4 times in 30m, back and forth over a narrow range: lengthen cooldowns or widen the strategy''s threshold.'
  - alert: CaravanDiscoveryFailing
    expr: min by (instance, model) (caravan_discovery_up) == 0
    for: 2m
    labels:
      severity: warning
    annotations:
      summary: Replica discovery of {{ "{{" }} $labels.model {{ "}}" }} is failing on control plane {{ "{{" }} $labels.instance {{ "}}" }}
      description: The control plane at {{ "{{" }} $labels.instance {{ "}}" }} has had no usable answer from Consul for {{ "{{" }} $labels.model {{ "}}" }} for 2m; it keeps serving the last replica set, so new, removed or failed replicas are not seen. caravan_discovery_failures_total{kind} says why (unreachable, leaderless, rate_limited, acl_filtered, acl_empty, acl_denied, config); its /readyz and log give Consul's text and the fix.
EOT
      }

      resources {
        cpu    = 1000
        memory = 2048
      }
    }
  }
}
