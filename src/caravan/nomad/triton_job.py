"""The Nomad job of one model's Triton+vLLM replicas, built purely from the spec.

Job ``triton-<model>``, group ``triton`` (the names the autoscaler scales), count =
``replicas.start`` and a ``scaling`` block (min, max, and the stock Nomad Autoscaler's
``policy`` with the model's checks: ``caravan.nomad.autoscaler_policy``). Ports ``grpc``/``metrics`` map
to Triton's 8001/8002 inside the container, where tritonserver binds them on 0.0.0.0
(the docker driver publishes them on the host). Triton's HTTP endpoint serves only the
model-ready script check: it listens on 127.0.0.1:8000 inside the container and is
not published, so there is no plaintext inference port beside the (possibly TLS) gRPC
one. The Consul service ``consul.service_prefix + model`` carries meta ``model`` and
``metrics_port`` (what discovery and Prometheus read) and two checks (below). The
model repository is delivered by ``template`` blocks (same text as ``triton_models/``),
weights land on the ``nomad.model_cache_volume`` host volume.

Dead engine -> restart: config.pbtxt sets ``ENABLE_VLLM_HEALTH_CHECK``
(``caravan.render.triton``) and tritonserver runs with ``--model-control-mode=explicit
--load-model=<model>``. When a request finds the vLLM engine dead, the backend fails it
and unloads the model. Triton's grpc.health.v1 ``Check`` is *server* readiness
(``TRITONSERVER_ServerIsReady``, server ``src/grpc/grpc_server.cc``), and strict
readiness explicitly accepts a model that is not ready "due to unload" (core
``src/server.cc`` ``InferenceServer::IsReady``): the gRPC check answers NOT_SERVING only
while the unload is in progress, then SERVING again with no model loaded (seen on the
real tritonserver 2.51, ``tests/contract/render``). So a second check,
``triton-model-ready``, a Nomad ``script`` check run inside the task, asks Triton's
HTTP ``/v2/models/<model>/ready`` (200 ready, 400 not; server ``src/http_server.cc``
HandleModelReady) on 127.0.0.1 and exits 2 (critical) unless ready. Consul then drops
the replica from discovery at once, and Nomad's check watcher restarts the task once a
check has stayed unhealthy for ``interval * (limit - 1)`` after its grace
(``client/serviceregistration/watcher.go``: ``timeLimit``, ``graceUntil``; the
restart counts as a failure against the group's ``restart`` policy, then ``reschedule``
moves the allocation). The gRPC check stays for what it sees: a hung or dead
tritonserver, or broken TLS.

Startup: tritonserver loads the startup model inside ``TRITONSERVER_ServerNew`` and
opens its ports only afterwards (server ``src/main.cc``), so both checks fail until the
weights are downloaded and loaded: ``check_restart.grace`` is ``nomad.startup_grace_s``,
counted from when Nomad registers the group's service (before the image pull and the
template renders) and again at every task restart (the group service hook's
``PreTaskRestart`` re-registers); the update's ``healthy_deadline`` is longer still, and so
is the ``migrate`` block's, which judges replicas placed outside a deployment (a node
drain, a reschedule: ``client/allocrunner/health_hook.go`` ``getHealthParams``). A
startup model that fails to load makes tritonserver exit (``--exit-on-error`` defaults
to true): the restart policy applies.

Replica TLS (``upstream_tls`` of the model, default ``security.upstream_tls``): Envoy
speaks TLS to the replicas, so tritonserver gets ``--grpc-use-ssl=true
--grpc-server-cert --grpc-server-key``; when Envoy presents a client certificate
(``upstream_tls.cert_file``) also ``--grpc-use-ssl-mutual=true --grpc-root-cert`` (the CA
bundle client certificates must chain to; Triton reads the files once at start, server
``src/grpc/grpc_server.cc``). The PEMs come from the Nomad Variable ``tls_var_path(job)``
= ``nomad/jobs/<job>/triton/tritonserver`` (items ``tls_cert``, ``tls_key``,
``tls_client_ca``), which the task may read without an ACL policy (Nomad
``acl/acl.go`` matchingVariablesCapabilitySet: the job, group and task paths), through
``template`` blocks into the task's ``secrets/`` directory (``/secrets`` in the
container, ``client/allocdir``); ``nomadVar`` blocks until the variable exists
(consul-template ``nomadVariableItemsFunc`` -> ``EnableBlocking``), so a replica never
starts without its certificate. ``change_mode = "noop"``: a rotation must not restart
every replica of the model at once; roll them (``nomad job restart -batch-size 1``).
The job's ``env = true`` secrets template skips that path, so no key lands in the
environment.

The Consul gRPC check then needs ``grpc_use_tls = true`` (Nomad ``api/services.go``
ServiceCheck ``GRPCUseTLS``; ``command/agent/consul/service_client.go`` createCheckReg
copies it, ``TLSSkipVerify`` and ``TLSServerName`` into Consul's registration). Consul
builds the check's TLS config with ``OutgoingTLSConfigForCheck``
(``tlsutil/config.go``): without the agent's ``enable_agent_tls_for_checks`` it trusts
only the system roots and presents no client certificate; with it, the agent's own CA
and certificate. Replica certificates come from a private CA and replica addresses are
dynamic, so the check sets ``tls_skip_verify = true`` (a liveness probe: it sends
nothing secret). With mutual TLS, Triton requires a client certificate on the same port
(one gRPC listener serves inference and health), so the Consul agents on GPU clients
need ``enable_agent_tls_for_checks = true`` and their certificate's CA in
``tls_client_ca`` next to Envoy's: see docs/security.md.

Draining: ``shutdown_delay`` (``nomad.drain_s``) deregisters the service first so the
control plane marks the replica gone and Envoy stops sending new requests; then
SIGTERM, Triton finishes in-flight streams for up to ``kill_timeout - 10 s``
(``--exit-timeout-secs``) before Nomad's ``kill_timeout`` SIGKILL. Nomad clients cap
``kill_timeout`` at their ``max_kill_timeout`` (30 s by default): raise it on GPU clients.
"""

from __future__ import annotations

from caravan.nomad import nomad_templates
from caravan.nomad.autoscaler_policy import autoscaler_policy
from caravan.nomad.jobmodel import (
    Check,
    CheckRestart,
    Device,
    DockerConfig,
    Job,
    MigrateStrategy,
    Network,
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
from caravan.nomad.platform_jobs import internal_port
from caravan.render import triton
from caravan.spec import PROGRESS_MARGIN_S, ModelSpec, PlatformSpec, names

GROUP = names.NOMAD_GROUP
TASK = "tritonserver"
GRPC_PORT, HTTP_PORT, METRICS_PORT = 8001, 8000, 8002
BIND = "0.0.0.0"  # inside the container's network namespace; docker publishes the ports
LOOPBACK = "127.0.0.1"  # HTTP: only the model-ready script check, inside the container
MODEL_READY_TIMEOUT_S = 4
REPO_DIR = "/local/models"
CACHE_DIR = "/model-cache"
CACHE_VOLUME = "model-cache"
# Replica TLS files: template destinations (task dir) and their path in the container.
TLS_FILES = {"tls_cert": "secrets/replica.crt", "tls_key": "secrets/replica.key",
             "tls_client_ca": "secrets/replica-client-ca.crt"}
EXAMPLE_FILES = {"tls_cert": "replica.pem", "tls_key": "replica.key",
                 "tls_client_ca": "replica-client-ca.pem"}  # in the job's header comment


def job_id(model: ModelSpec) -> str:
    """``triton-<model>``: the Nomad job id the autoscaler targets (``caravan.spec.names``)."""
    return model.nomad_job


def tls_var_path(jid: str) -> str:
    """The Nomad Variable holding a replica's TLS items: the task's own path, which its
    workload identity reads without an ACL policy."""
    return f"nomad/jobs/{jid}/{GROUP}/{TASK}"


def _in_container(destination: str) -> str:
    return "/" + destination  # task dir secrets/ and local/ are mounted at /secrets, /local


def triton_job(spec: PlatformSpec, model: ModelSpec) -> Job:
    jid = job_id(model)
    comment = (f"Triton + vLLM replicas of model {model.name} ({model.engine.model}).\n"
               "Rendered by `caravan render` from the platform spec; do not edit by hand.\n"
               f"Secrets (HF_TOKEN...): nomad var put nomad/jobs/{jid} HF_TOKEN=...")
    if model.upstream_tls is not None:
        items = " ".join(f"{k}=@{EXAMPLE_FILES[k]}" for k in _tls_items(model))
        comment += f"\nReplica TLS (required): nomad var put {tls_var_path(jid)} {items}"
    opt_out = spec.security.direct_replica_access if spec.security is not None else None
    if opt_out is not None and "tls_client_ca" not in _tls_items(model):
        comment += f"\nReplicas accept clients other than Envoy (direct_replica_access): {opt_out.reason}"
    return Job(
        id=jid, datacenters=spec.nomad.datacenters, namespace=spec.nomad.namespace,
        region=spec.nomad.region, meta=(("caravan_model", model.name),),
        groups=(_group(spec, model, jid),),
        comment=comment,
    )


def _tls_items(model: ModelSpec) -> tuple[str, ...]:
    """The Nomad Variable items a replica needs: none without TLS; the server pair;
    plus the client CA when Envoy presents a certificate (mutual TLS)."""
    tls = model.upstream_tls
    if tls is None:
        return ()
    mutual = tls.cert_file is not None
    return ("tls_cert", "tls_key", *(("tls_client_ca",) if mutual else ()))


def _group(spec: PlatformSpec, model: ModelSpec, jid: str) -> TaskGroup:
    nomad = spec.nomad
    return TaskGroup(
        name=GROUP,
        count=model.replicas.start,
        scaling=_scaling(spec, model),
        network=Network((internal_port(spec, "grpc", GRPC_PORT),
                         internal_port(spec, "metrics", METRICS_PORT))),
        volumes=(Volume(CACHE_VOLUME, source=nomad.model_cache_volume),),
        services=(_service(spec, model),),
        update=UpdateStrategy(
            max_parallel=1, min_healthy_time_s=30,
            healthy_deadline_s=nomad.startup_grace_s + 300,
            progress_deadline_s=nomad.startup_grace_s + PROGRESS_MARGIN_S,
            canary=nomad.canary, auto_promote=nomad.canary > 0, auto_revert=True,
        ),
        # A replacement placed outside a deployment (node drain, reschedule) is judged by
        # this block; Nomad's default 5 min deadline would mark a replica still loading
        # its weights unhealthy for good.
        migrate=MigrateStrategy(max_parallel=1, min_healthy_time_s=30,
                                healthy_deadline_s=nomad.startup_grace_s + 300),
        restart=RestartPolicy(attempts=2, interval_s=1800, delay_s=30, mode="fail"),
        reschedule=ReschedulePolicy(delay_s=60, max_delay_s=1800),
        shutdown_delay_s=nomad.drain_s,
        tasks=(_task(spec, model, jid),),
    )


def _scaling(spec: PlatformSpec, model: ModelSpec) -> Scaling:
    """Bounds, and the stock Nomad Autoscaler's policy (same checks as Caravan's own
    autoscaler); ``enabled`` (read by the Nomad Autoscaler only) when it is the one that
    scales (``nomad.autoscaler``), so the two never both act on a group."""
    policy = autoscaler_policy(model)
    enabled = policy is not None and spec.nomad.autoscaler == "nomad-autoscaler"
    return Scaling(min=model.replicas.min, max=model.replicas.max, enabled=enabled,
                   policy=policy)


def _grpc_check(model: ModelSpec, restart: CheckRestart) -> Check:
    """grpc.health.v1 on the gRPC port (over TLS with replica TLS). With mutual TLS the
    port accepts only certificates from ``tls_client_ca``, which should sign Envoy's
    alone; a Consul agent has none, so the check is a TCP connect instead, and the
    model-ready script check (loopback HTTP, inside the task) sees a hung server."""
    if "tls_client_ca" in _tls_items(model):
        return Check(name="triton-grpc-tcp", type="tcp", port="grpc", interval_s=10,
                     timeout_s=3, check_restart=restart)
    tls = model.upstream_tls is not None
    return Check(name="triton-grpc-health", type="grpc", port="grpc", interval_s=10, timeout_s=3,
                 check_restart=restart, grpc_use_tls=tls, tls_skip_verify=tls)


def _service(spec: PlatformSpec, model: ModelSpec) -> Service:
    # Critical for 10 s * (3 - 1) after the grace: Nomad restarts the task (module doc).
    restart = CheckRestart(limit=3, grace_s=spec.nomad.startup_grace_s)
    return Service(
        name=spec.service_name(model),
        port="grpc",
        tags=("caravan", "triton"),
        meta=(("model", model.name), ("metrics_port", "${NOMAD_HOST_PORT_metrics}")),
        checks=(
            _grpc_check(model, restart),
            Check(name="triton-model-ready", type="script", port=None, task=TASK,
                  command="python3", args=("-c", model_ready_script(model.name)),
                  interval_s=10, timeout_s=MODEL_READY_TIMEOUT_S + 1, check_restart=restart),
        ),
    )


def model_ready_script(model: str, port: int = HTTP_PORT) -> str:
    """``python3 -c`` source for the model-ready check: exit 0 when Triton answers 200
    on ``/v2/models/<model>/ready``; 2 (critical; 1 would be a warning) on 400 (not
    ready, unloaded), a refused connection or a timeout. The image's python3 is the one
    the vLLM backend runs on."""
    url = f"http://{LOOPBACK}:{port}/v2/models/{model}/ready"
    return ("import urllib.request\n"
            "try:\n"
            f"    urllib.request.urlopen('{url}', timeout={MODEL_READY_TIMEOUT_S})\n"
            "except Exception as e:\n"
            "    print(e)\n"
            "    raise SystemExit(2)")


def tritonserver_args(spec: PlatformSpec, model: ModelSpec) -> tuple[str, ...]:
    """tritonserver's command line in the job (flags as in Triton 2.51's ``--help``)."""
    return (
        f"--model-repository={REPO_DIR}",
        # explicit: the vLLM backend's health check can unload a dead engine's model
        "--model-control-mode=explicit", f"--load-model={model.name}",
        "--strict-readiness=true",  # NOT_SERVING while a model loads or unloads
        # HTTP only for the model-ready script check: loopback, not published.
        "--allow-http=true", f"--http-address={LOOPBACK}", f"--http-port={HTTP_PORT}",
        f"--grpc-address={BIND}", f"--grpc-port={GRPC_PORT}",
        "--allow-metrics=true", "--allow-gpu-metrics=true",
        f"--metrics-address={BIND}", f"--metrics-port={METRICS_PORT}",
        f"--exit-timeout-secs={max(spec.nomad.kill_timeout_s - 10, 1)}",
        *triton.KEEPALIVE_ARGS,
        *_tls_args(model),
    )


def _tls_args(model: ModelSpec) -> tuple[str, ...]:
    items = _tls_items(model)
    if not items:
        return ()
    args: tuple[str, ...] = (
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={_in_container(TLS_FILES['tls_cert'])}",
        f"--grpc-server-key={_in_container(TLS_FILES['tls_key'])}",
    )
    if "tls_client_ca" in items:  # Triton: --grpc-use-ssl-mutual implies --grpc-use-ssl
        args += ("--grpc-use-ssl-mutual=true",
                 f"--grpc-root-cert={_in_container(TLS_FILES['tls_client_ca'])}")
    return args


def _tls_templates(model: ModelSpec, jid: str) -> tuple[Template, ...]:
    path = tls_var_path(jid)
    return tuple(
        Template(TLS_FILES[item], nomad_templates.nomad_var_item(path, item), change_mode="noop")
        for item in _tls_items(model)
    )


def _task(spec: PlatformSpec, model: ModelSpec, jid: str) -> Task:
    nomad = spec.nomad
    repo = f"local/models/{model.name}"
    tls_var = tls_var_path(jid) if model.upstream_tls is not None else None
    return Task(
        name=TASK,
        config=DockerConfig(
            image=nomad.triton_image, command="tritonserver", args=tritonserver_args(spec, model),
            ports=("grpc", "metrics"), shm_size=model.resources.shm_mb * 1024 * 1024,
        ),
        env=(("HF_HOME", f"{CACHE_DIR}/huggingface"),),
        volume_mounts=(VolumeMount(CACHE_VOLUME, destination=CACHE_DIR),),
        templates=(
            Template(f"{repo}/config.pbtxt",
                     nomad_templates.template_literal(triton.config_pbtxt(model))),
            Template(f"{repo}/1/model.json",
                     nomad_templates.template_literal(triton.model_json(model))),
            Template("secrets/caravan.env",
                     nomad_templates.secrets_env(jid, skip=() if tls_var is None else (tls_var,)),
                     env=True),
            *_tls_templates(model, jid),
        ),
        resources=Resources(
            cpu_mhz=model.resources.cpu_mhz, memory_mb=model.resources.memory_mb,
            devices=(Device("nvidia/gpu", model.gpus),) if model.gpus else (),
        ),
        kill_timeout_s=nomad.kill_timeout_s,
        kill_signal="SIGTERM",
    )
