"""The Nomad job of one model's Triton+vLLM replicas, built purely from the spec.

Job ``triton-<model>``, group ``triton`` (the names the autoscaler scales), count =
``replicas.start`` and a ``scaling`` block (min, max). Ports ``grpc``/``http``/``metrics``
map to Triton's 8001/8000/8002 inside the container. The Consul service
``consul.service_prefix + model`` carries meta ``model`` and ``metrics_port`` (what
discovery and Prometheus read) and a ``grpc`` check (Triton serves grpc.health.v1).
The model repository is delivered by ``template`` blocks (same text as
``triton_models/``), weights land on the ``nomad.model_cache_volume`` host volume.

Draining: ``shutdown_delay`` (``nomad.drain_s``) deregisters the service first so the
control plane marks the replica gone and Envoy stops sending new requests; then
SIGTERM, Triton finishes in-flight streams for up to ``kill_timeout - 10 s``
(``--exit-timeout-secs``) before Nomad's ``kill_timeout`` SIGKILL. Nomad clients cap
``kill_timeout`` at their ``max_kill_timeout`` (30 s by default): raise it on GPU clients.
"""

from __future__ import annotations

from caravan.render import nomad_templates, triton
from caravan.render.jobmodel import (
    Check,
    CheckRestart,
    Device,
    DockerConfig,
    Job,
    Network,
    Port,
    ReschedulePolicy,
    Resources,
    RestartPolicy,
    Scaling,
    Service,
    Task,
    TaskGroup,
    Template,
    UpdateStrategy,
    Volume,
    VolumeMount,
)
from caravan.spec import ModelSpec, PlatformSpec

GROUP = "triton"
GRPC_PORT, HTTP_PORT, METRICS_PORT = 8001, 8000, 8002
REPO_DIR = "/local/models"
CACHE_DIR = "/model-cache"
CACHE_VOLUME = "model-cache"


def job_id(model: ModelSpec) -> str:
    """``triton-<model>``: the Nomad job id the autoscaler targets."""
    return f"triton-{model.name}"


def triton_job(spec: PlatformSpec, model: ModelSpec) -> Job:
    jid = job_id(model)
    return Job(
        id=jid, datacenters=spec.nomad.datacenters, namespace=spec.nomad.namespace,
        region=spec.nomad.region, meta=(("caravan_model", model.name),),
        groups=(_group(spec, model, jid),),
        comment=(f"Triton + vLLM replicas of model {model.name} ({model.engine.model}).\n"
                 "Rendered by `caravan render` from the platform spec; do not edit by hand.\n"
                 f"Secrets (HF_TOKEN...): nomad var put nomad/jobs/{jid} HF_TOKEN=..."),
    )


def _group(spec: PlatformSpec, model: ModelSpec, jid: str) -> TaskGroup:
    nomad = spec.nomad
    return TaskGroup(
        name=GROUP,
        count=model.replicas.start,
        scaling=Scaling(min=model.replicas.min, max=model.replicas.max),
        network=Network((Port("grpc", to=GRPC_PORT), Port("http", to=HTTP_PORT),
                         Port("metrics", to=METRICS_PORT))),
        volumes=(Volume(CACHE_VOLUME, source=nomad.model_cache_volume),),
        services=(_service(spec, model),),
        update=UpdateStrategy(
            max_parallel=1, min_healthy_time_s=30,
            healthy_deadline_s=nomad.startup_grace_s + 300,
            progress_deadline_s=nomad.startup_grace_s + 600,
            canary=nomad.canary, auto_promote=nomad.canary > 0, auto_revert=True,
        ),
        restart=RestartPolicy(attempts=2, interval_s=1800, delay_s=30, mode="fail"),
        reschedule=ReschedulePolicy(delay_s=60, max_delay_s=1800),
        shutdown_delay_s=nomad.drain_s,
        tasks=(_task(spec, model, jid),),
    )


def _service(spec: PlatformSpec, model: ModelSpec) -> Service:
    return Service(
        name=spec.consul.service_prefix + model.name,
        port="grpc",
        tags=("caravan", "triton"),
        meta=(("model", model.name), ("metrics_port", "${NOMAD_HOST_PORT_metrics}")),
        checks=(Check(
            name="triton-grpc-health", type="grpc", port="grpc", interval_s=10, timeout_s=3,
            check_restart=CheckRestart(limit=3, grace_s=spec.nomad.startup_grace_s),
        ),),
    )


def _task(spec: PlatformSpec, model: ModelSpec, jid: str) -> Task:
    nomad = spec.nomad
    args = (
        f"--model-repository={REPO_DIR}",
        f"--grpc-port={GRPC_PORT}", f"--http-port={HTTP_PORT}", f"--metrics-port={METRICS_PORT}",
        "--allow-metrics=true", "--allow-gpu-metrics=true",
        f"--exit-timeout-secs={max(nomad.kill_timeout_s - 10, 1)}",
    )
    repo = f"local/models/{model.name}"
    return Task(
        name="tritonserver",
        config=DockerConfig(
            image=nomad.triton_image, command="tritonserver", args=args,
            ports=("grpc", "http", "metrics"), shm_size=model.resources.shm_mb * 1024 * 1024,
        ),
        env=(("HF_HOME", f"{CACHE_DIR}/huggingface"),),
        volume_mounts=(VolumeMount(CACHE_VOLUME, destination=CACHE_DIR),),
        templates=(
            Template(f"{repo}/config.pbtxt", triton.config_pbtxt(model)),
            Template(f"{repo}/1/model.json", triton.model_json(model)),
            Template("secrets/caravan.env", nomad_templates.secrets_env(jid), env=True),
        ),
        resources=Resources(
            cpu_mhz=model.resources.cpu_mhz, memory_mb=model.resources.memory_mb,
            devices=(Device("nvidia/gpu", model.gpus),) if model.gpus else (),
        ),
        kill_timeout_s=nomad.kill_timeout_s,
        kill_signal="SIGTERM",
    )
