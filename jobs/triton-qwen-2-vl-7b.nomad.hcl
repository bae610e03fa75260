# Triton + vLLM replicas of model qwen-2-vl-7b (Qwen/Qwen2-VL-7B-Instruct).
# Rendered by `caravan render` from the platform spec; do not edit by hand.
# Secrets (HF_TOKEN...): nomad var put nomad/jobs/triton-qwen-2-vl-7b HF_TOKEN=...

job "triton-qwen-2-vl-7b" {
  namespace   = "default"
  type        = "service"
  datacenters = ["dc1"]
  priority    = 50

  meta {
    caravan_model = "qwen-2-vl-7b"
  }

  group "triton" {
    count          = 1
    shutdown_delay = "30s"

    scaling {
      enabled = false
      min     = 1
      max     = 3
    }

    network {
      mode = "host"

      port "grpc" {
        to           = 8001
        host_network = "private"
      }

      port "metrics" {
        to           = 8002
        host_network = "private"
      }
    }

    volume "model-cache" {
      type      = "host"
      source    = "model-cache"
      read_only = false
    }

    service {
      name     = "triton-qwen-2-vl-7b"
      provider = "consul"
      port     = "grpc"
      tags     = ["caravan", "triton"]

      meta {
        model        = "qwen-2-vl-7b"
        metrics_port = "${NOMAD_HOST_PORT_metrics}"
      }

      check {
        name     = "triton-grpc-health"
        type     = "grpc"
        port     = "grpc"
        interval = "10s"
        timeout  = "3s"

        check_restart {
          limit           = 3
          grace           = "15m"
          ignore_warnings = false
        }
      }

      check {
        name    = "triton-model-ready"
        type    = "script"
        task    = "tritonserver"
        command = "python3"
        args = [
          "-c",
          "import urllib.request\ntry:\n    urllib.request.urlopen('http://127.0.0.1:8000/v2/models/qwen-2-vl-7b/ready', timeout=4)\nexcept Exception as e:\n    print(e)\n    raise SystemExit(2)",
        ]
        interval = "10s"
        timeout  = "5s"

        check_restart {
          limit           = 3
          grace           = "15m"
          ignore_warnings = false
        }
      }
    }

    update {
      max_parallel      = 1
      health_check      = "checks"
      min_healthy_time  = "30s"
      healthy_deadline  = "20m"
      progress_deadline = "25m"
      canary            = 0
      auto_promote      = false
      auto_revert       = true
    }

    migrate {
      max_parallel     = 1
      health_check     = "checks"
      min_healthy_time = "30s"
      healthy_deadline = "20m"
    }

    restart {
      attempts = 2
      interval = "30m"
      delay    = "30s"
      mode     = "fail"
    }

    reschedule {
      delay          = "1m"
      delay_function = "exponential"
      max_delay      = "30m"
      unlimited      = true
    }

    task "tritonserver" {
      driver       = "docker"
      kill_timeout = "2m"
      kill_signal  = "SIGTERM"

      config {
        image   = "nvcr.io/nvidia/tritonserver:25.01-vllm-python-py3"
        command = "tritonserver"
        args = [
          "--model-repository=/local/models",
          "--model-control-mode=explicit",
          "--load-model=qwen-2-vl-7b",
          "--strict-readiness=true",
          "--allow-http=true",
          "--http-address=127.0.0.1",
          "--http-port=8000",
          "--grpc-address=0.0.0.0",
          "--grpc-port=8001",
          "--allow-metrics=true",
          "--allow-gpu-metrics=true",
          "--metrics-address=0.0.0.0",
          "--metrics-port=8002",
          "--exit-timeout-secs=110",
          "--grpc-keepalive-permit-without-calls=1",
          "--grpc-http2-min-recv-ping-interval-without-data=1000",
        ]
        ports    = ["grpc", "metrics"]
        shm_size = 8589934592
      }

      env {
        HF_HOME = "/model-cache/huggingface"
      }

      volume_mount {
        volume      = "model-cache"
        destination = "/model-cache"
        read_only   = false
      }

      template {
        destination = "local/models/qwen-2-vl-7b/config.pbtxt"
        change_mode = "restart"
        env         = false
        data = <<EOT
# Triton + vLLM backend config for qwen-2-vl-7b (rendered by caravan; edit the spec).
name: "qwen-2-vl-7b"
backend: "vllm"
max_batch_size: 0

# vLLM batches continuously itself; Triton streams each response as it comes.
model_transaction_policy {
  decoupled: true
}

# One instance owning all tensor-parallel GPUs of the replica.
instance_group [
  {
    count: 1
    kind: KIND_MODEL
  }
]

parameters {
  key: "REPORT_CUSTOM_METRICS"
  value: { string_value: "true" }
}

# Caravan addition: vLLM's prefix-cache queries/hits pair (docs/triton-contract.md C37).
parameters {
  key: "REPORT_PREFIX_CACHE_METRICS"
  value: { string_value: "true" }
}

# A dead vLLM engine unloads the model (needs --model-control-mode=explicit): the
# Nomad job's model-ready check then fails and Nomad restarts the replica.
parameters {
  key: "ENABLE_VLLM_HEALTH_CHECK"
  value: { string_value: "true" }
}

input [
  {
    name: "text_input"
    data_type: TYPE_STRING
    dims: [ 1 ]
  },
  {
    name: "image"
    data_type: TYPE_STRING
    dims: [ -1 ]
    optional: true
  },
  {
    name: "stream"
    data_type: TYPE_BOOL
    dims: [ 1 ]
    optional: true
  },
  {
    name: "sampling_parameters"
    data_type: TYPE_STRING
    dims: [ 1 ]
    optional: true
  },
  {
    name: "exclude_input_in_output"
    data_type: TYPE_BOOL
    dims: [ 1 ]
    optional: true
  },
  {
    name: "return_finish_reason"
    data_type: TYPE_BOOL
    dims: [ 1 ]
    optional: true
  },
  {
    name: "return_num_input_tokens"
    data_type: TYPE_BOOL
    dims: [ 1 ]
    optional: true
  },
  {
    name: "return_num_output_tokens"
    data_type: TYPE_BOOL
    dims: [ 1 ]
    optional: true
  }
]

output [
  {
    name: "text_output"
    data_type: TYPE_STRING
    dims: [ -1 ]
  },
  {
    name: "finish_reason"
    data_type: TYPE_STRING
    dims: [ -1 ]
  },
  {
    name: "num_input_tokens"
    data_type: TYPE_UINT32
    dims: [ 1 ]
  },
  {
    name: "num_output_tokens"
    data_type: TYPE_UINT32
    dims: [ -1 ]
  }
]
EOT
      }

      template {
        destination = "local/models/qwen-2-vl-7b/1/model.json"
        change_mode = "restart"
        env         = false
        data = <<EOT
{
  "model": "Qwen/Qwen2-VL-7B-Instruct",
  "tensor_parallel_size": 1,
  "gpu_memory_utilization": 0.9,
  "max_model_len": 4096,
  "max_num_seqs": 256,
  "max_num_batched_tokens": 8192,
  "dtype": "auto",
  "enable_prefix_caching": true
}
EOT
      }

      template {
        destination = "secrets/caravan.env"
        change_mode = "restart"
        env         = true
        data = <<EOT
{{ range nomadVarList "nomad/jobs/triton-qwen-2-vl-7b" }}{{ with nomadVar .Path }}{{ range .Tuples }}{{ .K }}={{ .V | toJSON }}
{{ end }}{{ end }}{{ end }}
EOT
      }

      resources {
        cpu    = 4000
        memory = 32768

        device "nvidia/gpu" {
          count = 1
        }
      }
    }
  }
}
