# Caravan control plane: xDS server(s) and the autoscaler.
# Rendered by `caravan render` from the platform spec; do not edit by hand.
# Tokens: nomad var put nomad/jobs/caravan-control-plane CONSUL_HTTP_TOKEN=... NOMAD_TOKEN=...

job "caravan-control-plane" {
  namespace   = "default"
  type        = "service"
  datacenters = ["dc1"]
  priority    = 70

  group "xds" {
    count          = 2
    shutdown_delay = "5s"

    network {
      mode = "host"

      port "xds" {
        host_network = "private"
      }

      port "admin" {
        host_network = "private"
      }
    }

    service {
      name     = "caravan-xds"
      provider = "consul"
      port     = "xds"
      tags     = ["caravan"]

      check {
        name     = "xds-grpc-health"
        type     = "grpc"
        port     = "xds"
        interval = "5s"
        timeout  = "2s"
      }
    }

    service {
      name     = "caravan-xds-admin"
      provider = "consul"
      port     = "admin"
      tags     = ["caravan"]

      check {
        name     = "xds-admin-health"
        type     = "http"
        port     = "admin"
        path     = "/healthz"
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

    task "xds" {
      driver       = "docker"
      kill_timeout = "30s"

      config {
        image = "caravan:0.1.0"
        args = [
          "xds",
          "--spec",
          "/local/platform.yaml",
          "--consul",
          "--port",
          "${NOMAD_PORT_xds}",
          "--admin-port",
          "${NOMAD_PORT_admin}",
          "--node-id",
          "xds-${NOMAD_ALLOC_INDEX}",
        ]
        network_mode = "host"
      }

      template {
        destination = "local/platform.yaml"
        change_mode = "restart"
        env         = false
        data = <<EOT
# caravan platform spec for this allocation (rendered by Nomad)
consul: {}
control_plane:
  address: {{ env "NOMAD_IP_xds" }}
  admin_port: {{ env "NOMAD_PORT_admin" }}
  xds_port: {{ env "NOMAD_PORT_xds" }}
default_model: llama-3-8b
envoy:
  address: 0.0.0.0
models:
- autoscaling:
    checks:
    - name: demand
      query_window_s: 30
      signal: llm_demand
      strategy:
        name: requests-per-replica
        params:
          burst_samples: 1
          target: 16
          tolerance: 0.1
    cooldown_down_s: 60
    cooldown_up_s: 30
    evaluation_interval_s: 10
    on_check_error: block_down
    scale_down_stabilization_s: 300
  engine:
    max_model_len: 8192
    model: meta-llama/Meta-Llama-3.1-8B-Instruct
  name: llama-3-8b
  replicas:
    initial: 2
    max: 4
  resources:
    cpu_mhz: 8000
- engine:
    model: Qwen/Qwen2-VL-7B-Instruct
  name: qwen-2-vl-7b
  replicas:
    initial: 1
    max: 3
nomad: {}
EOT
      }

      template {
        destination = "secrets/caravan.env"
        change_mode = "restart"
        env         = true
        data = <<EOT
{{ range nomadVarList "nomad/jobs/caravan-control-plane" }}{{ with nomadVar .Path }}{{ range .Tuples }}{{ if eq .K "CONSUL_HTTP_TOKEN" }}CONSUL_HTTP_TOKEN_FILE="/secrets/consul.token"{{ else }}{{ .K }}={{ .V | toJSON }}{{ end }}
{{ end }}{{ end }}{{ end }}
EOT
      }

      template {
        destination = "secrets/consul.token"
        change_mode = "noop"
        env         = false
        perms       = "0400"
        uid         = 10001
        data        = "{{ range nomadVarList \"nomad/jobs/caravan-control-plane\" }}{{ with nomadVar .Path }}{{ range .Tuples }}{{ if eq .K \"CONSUL_HTTP_TOKEN\" }}{{ .V }}{{ end }}{{ end }}{{ end }}{{ end }}"
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }

  group "autoscaler" {
    count          = 1
    shutdown_delay = "5s"

    network {
      mode = "host"

      port "metrics" {
        host_network = "private"
      }
    }

    service {
      name     = "caravan-autoscaler"
      provider = "consul"
      port     = "metrics"
      tags     = ["caravan"]

      check {
        name     = "autoscaler-tcp"
        type     = "tcp"
        port     = "metrics"
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

    task "autoscaler" {
      driver       = "docker"
      kill_timeout = "30s"

      config {
        image      = "caravan:0.1.0"
        entrypoint = ["/bin/sh", "-c"]
        args = [
          "exec caravan autoscale --spec /local/platform.yaml --prometheus \"$PROMETHEUS_URL\" --metrics-address \"$NOMAD_IP_metrics\" --metrics-port \"$NOMAD_PORT_metrics\"",
        ]
        network_mode = "host"
      }

      template {
        destination = "local/platform.yaml"
        change_mode = "restart"
        env         = false
        data = <<EOT
# caravan platform spec for this allocation (rendered by Nomad)
consul: {}
control_plane: {}
default_model: llama-3-8b
envoy:
  address: 0.0.0.0
models:
- autoscaling:
    checks:
    - name: demand
      query_window_s: 30
      signal: llm_demand
      strategy:
        name: requests-per-replica
        params:
          burst_samples: 1
          target: 16
          tolerance: 0.1
    cooldown_down_s: 60
    cooldown_up_s: 30
    evaluation_interval_s: 10
    on_check_error: block_down
    scale_down_stabilization_s: 300
  engine:
    max_model_len: 8192
    model: meta-llama/Meta-Llama-3.1-8B-Instruct
  name: llama-3-8b
  replicas:
    initial: 2
    max: 4
  resources:
    cpu_mhz: 8000
- engine:
    model: Qwen/Qwen2-VL-7B-Instruct
  name: qwen-2-vl-7b
  replicas:
    initial: 1
    max: 3
nomad: {}
EOT
      }

      template {
        destination = "secrets/caravan.env"
        change_mode = "restart"
        env         = true
        data = <<EOT
{{ range nomadVarList "nomad/jobs/caravan-control-plane" }}{{ with nomadVar .Path }}{{ range .Tuples }}{{ if eq .K "CONSUL_HTTP_TOKEN" }}CONSUL_HTTP_TOKEN_FILE="/secrets/consul.token"{{ else }}{{ .K }}={{ .V | toJSON }}{{ end }}
{{ end }}{{ end }}{{ end }}
EOT
      }

      template {
        destination = "secrets/consul.token"
        change_mode = "noop"
        env         = false
        perms       = "0400"
        uid         = 10001
        data        = "{{ range nomadVarList \"nomad/jobs/caravan-control-plane\" }}{{ with nomadVar .Path }}{{ range .Tuples }}{{ if eq .K \"CONSUL_HTTP_TOKEN\" }}{{ .V }}{{ end }}{{ end }}{{ end }}{{ end }}"
      }

      template {
        destination = "local/prometheus.env"
        change_mode = "restart"
        env         = true
        data        = "{{ range $i, $s := service \"prometheus\" }}{{ if eq $i 0 }}PROMETHEUS_URL=http://{{ $s.Address }}:{{ $s.Port }}\n{{ end }}{{ end }}"
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }
}
