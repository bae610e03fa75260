"""The platform spec's models: one YAML file describes every model Caravan serves.

Pure, frozen pydantic data (``caravan.spec.base.Frozen``): safe to share between
threads and tasks. Loading and error reporting live in ``caravan.spec.loader``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from caravan.spec.base import Frozen as _Frozen
from caravan.spec.security import SecuritySpec, UpstreamTls, replica_mtls_errors

MODEL_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def is_prime(n: int) -> bool:
    """True when ``n`` is a prime number (Maglev table sizes must be prime)."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    i = 3
    while i * i <= n:
        if n % i == 0:
            return False
        i += 2
    return True


class EngineArgs(_Frozen):
    """vLLM engine arguments, rendered into Triton's ``<model>/1/model.json``."""

    model: str = Field(min_length=1, description="HF model id or path inside the model cache")
    max_model_len: int = Field(4096, ge=16)
    tensor_parallel_size: int = Field(1, ge=1, le=16)
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    max_num_seqs: int = Field(256, ge=1)
    dtype: str = "auto"
    enable_prefix_caching: bool = True


class ReplicaBounds(_Frozen):
    """How many replicas a model runs: ``min <= initial <= max``."""

    min: int = Field(1, ge=0)
    initial: int | None = Field(None, ge=0, description="defaults to min")
    max: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> ReplicaBounds:
        if self.max < self.min:
            raise ValueError(f"max: must be >= min ({self.min})")
        if self.initial is not None and not self.min <= self.initial <= self.max:
            raise ValueError(f"initial: must be between min ({self.min}) and max ({self.max})")
        return self

    @property
    def start(self) -> int:
        """The replica count to start with."""
        return self.min if self.initial is None else self.initial


class Resources(_Frozen):
    """Per-replica resources asked of Nomad."""

    cpu_mhz: int = Field(4000, ge=100)
    memory_mb: int = Field(32768, ge=256)
    gpus: int | None = Field(None, ge=0, description="defaults to engine.tensor_parallel_size")
    shm_mb: int = Field(8192, ge=64, description="/dev/shm size for the container (NCCL, vLLM)")


# The prefix policy's key: the prompt's first words (words are the simulated engine's
# tokens). Chosen by benchmarks/routing.py (docs/routing.md).
DEFAULT_PREFIX_TOKENS = 64


class Routing(_Frozen):
    """How Envoy spreads one model's requests over its replicas."""

    session_header: str = Field("x-session-id", pattern=r"^[a-z0-9-]+$")
    maglev_table_size: int = Field(65537, ge=3)
    hash_balance_factor: int | None = Field(
        150, description="bounded-load consistent hashing, >= 100 (None disables)"
    )
    unary_timeout_s: float = Field(120.0, gt=0)
    retries: int = Field(2, ge=0, le=10)
    policy: Literal["session", "prefix", "least_request", "round_robin"] = Field(
        "session", description="session: Maglev on session_header; prefix: Maglev on the session "
        "header, else on the prompt's first prefix_tokens words (bounded by hash_balance_factor); "
        "least_request; round_robin (docs/routing.md)",
    )
    prefix_tokens: int = Field(
        DEFAULT_PREFIX_TOKENS, ge=1, le=4096,
        description="prefix policy: whitespace-separated words of the prompt the key hashes",
    )

    @field_validator("maglev_table_size")
    @classmethod
    def _prime(cls, v: int) -> int:
        if not is_prime(v):
            raise ValueError(f"must be a prime number (got {v}; Envoy's default is 65537)")
        return v

    @field_validator("hash_balance_factor")
    @classmethod
    def _balance(cls, v: int | None) -> int | None:
        if v is not None and v < 100:
            raise ValueError(f"must be >= 100 (got {v}); 120-200 is typical")
        return v


class SimulatorParams(_Frozen):
    """Knobs of the continuous-batching simulator that stands in for Triton+vLLM locally.

    Defaults are calibrated to a 7-8B model on one H100: ~13 ms per output token at
    batch 1, so ~300 output tokens take ~4 s (the reference table at concurrency 1).
    """

    decode_ms_per_step: float = Field(13.0, gt=0, description="decode step cost at batch 1, ms")
    decode_ms_per_seq: float = Field(0.08, ge=0, description="extra step cost per running seq, ms")
    prefill_ms_per_token: float = Field(0.12, ge=0, description="prefill cost per prompt token, ms")
    kv_cache_tokens: int = Field(200_000, ge=1024, description="KV-cache token budget")
    mean_output_tokens: int = Field(300, ge=1, description="when max_tokens is not given")


# Top finite bucket (ms) of the vLLM backend's histogram behind each latency SLO
# (caravan.observability.metric_names.VLLM_BUCKETS): histogram_quantile never reads above it.
SLO_BUCKET_CAPS_MS = {"ttft_ms": ("vllm:time_to_first_token_seconds", 10_000.0),
                      "e2e_ms": ("vllm:e2e_request_latency_seconds", 60_000.0)}


class SloSpec(_Frozen):
    """A model's service-level objectives; the Prometheus alerts fire above them.

    Latencies are p95 over 5 minutes, in milliseconds, below their histogram's top bucket
    (10 s TTFT, 60 s end-to-end); ``error_ratio`` is the fraction (0-1) of failed
    inference requests over 5 minutes.
    """

    ttft_ms: float = Field(2000.0, gt=0, description="p95 time to first token, ms")
    e2e_ms: float = Field(30000.0, gt=0, description="p95 end-to-end request latency, ms")
    error_ratio: float = Field(0.05, gt=0, lt=1, description="max fraction of failed requests")

    @field_validator("ttft_ms", "e2e_ms")
    @classmethod
    def _below_bucket_cap(cls, v: float, info: ValidationInfo) -> float:
        """An SLO at or above the top bucket could never fire: refuse it."""
        metric, cap = SLO_BUCKET_CAPS_MS[str(info.field_name)]
        if v >= cap:
            raise ValueError(f"must be below {cap:g} (got {v:g}): the top bucket of {metric} "
                             f"is {cap / 1000:g} s, its p95 never reads higher, so the alert "
                             "could never fire")
        return v


class ModelSpec(_Frozen):
    """One served model: engine, replica bounds, resources, routing."""

    name: str
    engine: EngineArgs
    replicas: ReplicaBounds = ReplicaBounds()
    resources: Resources = Resources()
    routing: Routing = Routing()
    simulator: SimulatorParams = SimulatorParams()
    slo: SloSpec = SloSpec()
    autoscaling: dict[str, Any] | None = Field(
        None, description="scaling policy; validated by caravan.autoscaler.policy"
    )
    upstream_tls: UpstreamTls | None = Field(
        None, description="TLS from Envoy to this model's replicas (default security.upstream_tls)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not MODEL_NAME_RE.match(v):
            raise ValueError(
                f"{v!r} is not a valid model name: use lowercase letters, digits and '-', "
                "1-63 characters, starting and ending with a letter or digit"
            )
        return v

    @property
    def cluster_name(self) -> str:
        """The Envoy cluster (and ClusterLoadAssignment) name for this model."""
        return f"model-{self.name}"

    @property
    def gpus(self) -> int:
        return self.engine.tensor_parallel_size if self.resources.gpus is None else self.resources.gpus


class EnvoySpec(_Frozen):
    address: str = "127.0.0.1"
    listen_port: int = Field(8080, ge=1, le=65535)
    admin_port: int = Field(9901, ge=1, le=65535)
    model_header: str = Field("x-model", pattern=r"^[a-z0-9-]+$")


class ControlPlaneSpec(_Frozen):
    address: str = "127.0.0.1"
    xds_port: int = Field(18000, ge=1, le=65535)
    admin_port: int = Field(18001, ge=1, le=65535)
    debounce_quiet_ms: int = Field(50, ge=0, le=10_000)
    debounce_max_ms: int = Field(1000, ge=1, le=60_000)


class ConsulSpec(_Frozen):
    """Where the control plane finds replicas in production. Tokens come from env or file."""

    address: str = "127.0.0.1:8500"
    scheme: Literal["http", "https"] = "http"
    datacenter: str | None = None
    token_file: str | None = Field(None, description="file holding the ACL token (or CONSUL_HTTP_TOKEN)")
    ca_file: str | None = None
    wait_s: int = Field(30, ge=1, le=600)
    allow_warning: bool = False
    service_prefix: str = Field("triton-", description="Consul service name = prefix + model name")
    timeout_s: float = Field(
        10.0, gt=0, le=300, description="HTTP timeout on top of wait_s (+ wait/16 jitter), seconds"
    )
    empty_confirm_s: float = Field(
        10.0, ge=0, le=600,
        description="an update that empties a model's replicas is held this long first (0: off)",
    )

    @field_validator("address")
    @classmethod
    def _bracketed_ipv6(cls, v: str) -> str:
        host = v.split("://", 1)[-1]
        if host.count(":") > 1 and not host.startswith("["):
            raise ValueError(f"{v!r}: an IPv6 address needs brackets: [address]:port, e.g. [::1]:8500")
        return v


class NomadSpec(_Frozen):
    """Where jobs are deployed and scaled. Tokens come from env or file, never the spec."""

    address: str = "http://127.0.0.1:4646"
    namespace: str = "default"
    region: str | None = None
    datacenters: tuple[str, ...] = ("dc1",)
    token_file: str | None = Field(None, description="file holding the ACL token (or NOMAD_TOKEN)")
    ca_file: str | None = Field(None, description="CA bundle for https (or NOMAD_CACERT)")
    client_cert: str | None = Field(None, description="mTLS client cert (or NOMAD_CLIENT_CERT)")
    client_key: str | None = Field(None, description="mTLS client key (or NOMAD_CLIENT_KEY)")
    triton_image: str = "nvcr.io/nvidia/tritonserver:25.01-vllm-python-py3"
    caravan_image: str = "caravan:0.1.0"
    envoy_image: str = "envoyproxy/envoy:v1.40.0"
    gpus_per_node: int = Field(8, ge=1, le=64, description="GPUs one Nomad client offers")
    model_cache_volume: str = Field(
        "model-cache", pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="Nomad host_volume on GPU clients holding downloaded weights",
    )
    drain_s: int = Field(30, ge=0, le=600, description="group shutdown_delay: deregister, then wait")
    kill_timeout_s: int = Field(
        120, ge=5, le=3600, description="SIGTERM -> SIGKILL; in-flight streams finish meanwhile"
    )
    canary: int = Field(0, ge=0, le=10, description="canaries per deployment (auto-promoted)")
    startup_grace_s: int = Field(
        900, ge=30, le=7200, description="weights download + model load before checks count"
    )
    xds_replicas: int = Field(2, ge=1, le=10, description="control-plane xDS instances")
    autoscaler: Literal["caravan", "nomad-autoscaler"] = Field(
        "caravan", description="who scales model groups: Caravan's autoscaler (control-plane "
        "job) or the stock Nomad Autoscaler (each scaling block's rendered policy)",
    )
    internal_network: str = Field(
        "private", pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Nomad client host_network for every port but Envoy's ingress (xDS, "
        "control-plane admin, replicas, Envoy stats, Prometheus, Grafana, autoscaler); "
        "'default' is Nomad's default network (the node's main interface)",
    )

    @field_validator("triton_image", "caravan_image", "envoy_image")
    @classmethod
    def _pinned(cls, v: str) -> str:
        problem = image_tag_problem(v)
        if problem:
            raise ValueError(problem)
        return v


def image_tag_problem(ref: str) -> str | None:
    """Why an image reference is not pinned (no tag nor digest), else None."""
    name, at, digest = ref.partition("@")
    if at:
        return None if digest.startswith("sha256:") else f"{ref!r}: digest must be sha256:<hex>"
    last = name.rsplit("/", 1)[-1]
    repo, colon, tag = last.partition(":")
    if not repo or not colon or not tag:
        return f"{ref!r} has no tag: pin a version, e.g. {name.rstrip(':')}:<version>"
    return None


class LocalSpec(_Frozen):
    """`caravan up` / `caravan demo`: the whole stack on 127.0.0.1."""

    time_scale: float = Field(0.1, gt=0, le=1, description="simulator durations are multiplied by this")
    replica_base_port: int = Field(9100, ge=1024, le=65000)
    metrics_base_port: int = Field(9300, ge=1024, le=65000)
    prometheus_port: int = Field(9090, ge=1, le=65535)
    state_dir: str = ".caravan"


class PlatformSpec(_Frozen):
    """The whole platform. ``default_model`` gets requests without a model header."""

    models: list[ModelSpec] = Field(min_length=1)
    default_model: str | None = None
    envoy: EnvoySpec = EnvoySpec()
    control_plane: ControlPlaneSpec = ControlPlaneSpec()
    consul: ConsulSpec = ConsulSpec()
    nomad: NomadSpec = NomadSpec()
    local: LocalSpec = LocalSpec()
    security: SecuritySpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _upstream_tls_default(cls, data: Any) -> Any:
        """Each model without its own ``upstream_tls`` gets ``security.upstream_tls``."""
        sec = data.get("security") if isinstance(data, dict) else None
        tls = sec.get("upstream_tls") if isinstance(sec, dict) else None
        models = data.get("models") if isinstance(data, dict) else None
        if tls is None or not isinstance(models, list):
            return data
        filled = [
            {**m, "upstream_tls": tls} if isinstance(m, dict) and m.get("upstream_tls") is None
            else m
            for m in models
        ]
        return {**data, "models": filled}

    @model_validator(mode="after")
    def _consistent(self) -> PlatformSpec:
        errors = cross_field_errors(self.model_dump())
        errors += replica_mtls_errors(self.security, [m.upstream_tls for m in self.models])
        if errors:
            raise ValueError("\n".join(errors))
        return self

    @property
    def default(self) -> ModelSpec:
        """The model that gets requests without a model header."""
        name = self.default_model or self.models[0].name
        return next(m for m in self.models if m.name == name)

    def model(self, name: str) -> ModelSpec:
        """The model called ``name``; KeyError if none."""
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)


def cross_field_errors(data: dict[str, Any]) -> list[str]:
    """Checks spanning several fields, run on raw data too, so they are reported
    alongside field errors: duplicate names, unknown default model, port clashes."""
    errors: list[str] = []
    models = data.get("models")
    seen: dict[str, int] = {}
    for i, m in enumerate(models if isinstance(models, list) else []):
        name = m.get("name") if isinstance(m, dict) else None
        if not isinstance(name, str):
            continue
        if name in seen:
            errors.append(f"models[{i}].name: duplicate model name {name!r} (also models[{seen[name]}])")
        seen.setdefault(name, i)
    default = data.get("default_model")
    if isinstance(default, str) and seen and default not in seen:  # non-strings: a field error
        errors.append(f"default_model: {default!r} is not one of the models {sorted(seen)}")
    return errors + _port_clashes(data) + _gpu_fit(data) + _nomad_rules(data)


NOMAD_SERVICE_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
PROGRESS_MARGIN_S = 600  # model groups: progress_deadline = startup_grace_s + 600


def _nomad_rules(data: dict[str, Any]) -> list[str]:
    """What Nomad's job validation would refuse in the rendered jobs: a ``kill_timeout``
    longer than the model groups' ``progress_deadline`` (``Task.Validate``), and Consul
    service names (``consul.service_prefix`` + model name) that are not RFC 1123 labels of
    at most 63 characters (``Service.ValidateName``)."""
    nomad, consul = data.get("nomad"), data.get("consul")
    nomad = nomad if isinstance(nomad, dict) else {}
    kill, grace = nomad.get("kill_timeout_s", 120), nomad.get("startup_grace_s", 900)
    errors: list[str] = []
    if isinstance(kill, int) and isinstance(grace, int) and kill > grace + PROGRESS_MARGIN_S:
        errors.append(f"nomad.kill_timeout_s: {kill} s is longer than the model groups' "
                      f"progress_deadline (startup_grace_s + {PROGRESS_MARGIN_S} = "
                      f"{grace + PROGRESS_MARGIN_S} s); Nomad refuses a kill_timeout longer than "
                      "the progress deadline")
    prefix = consul.get("service_prefix", "triton-") if isinstance(consul, dict) else "triton-"
    if not isinstance(prefix, str):
        return errors
    if re.search(r"[^A-Za-z0-9-]", prefix) or prefix.startswith("-"):
        errors.append(f"consul.service_prefix: {prefix!r} may hold only letters, digits and '-', "
                      "not first: Nomad service names are RFC 1123 labels")
        return errors
    models = data.get("models")
    for i, m in enumerate(models if isinstance(models, list) else []):
        name = m.get("name") if isinstance(m, dict) else None
        if isinstance(name, str) and not NOMAD_SERVICE_NAME_RE.match(prefix + name):
            errors.append(f"models[{i}].name: service name {prefix + name!r} (consul.service_prefix "
                          f"+ name) has {len(prefix + name)} characters; Nomad allows at most 63 "
                          "(RFC 1123): shorten the name or the prefix")
    return errors


def _gpu_fit(data: dict[str, Any]) -> list[str]:
    """A replica must fit on one node: tensor_parallel_size <= GPUs asked <= gpus_per_node."""
    nomad = data.get("nomad")
    per_node = nomad.get("gpus_per_node", 8) if isinstance(nomad, dict) else 8
    models = data.get("models")
    if not isinstance(per_node, int) or not isinstance(models, list):
        return []
    errors: list[str] = []
    for i, m in enumerate(models):
        engine = m.get("engine") if isinstance(m, dict) else None
        tp = engine.get("tensor_parallel_size", 1) if isinstance(engine, dict) else 1
        res = m.get("resources") if isinstance(m, dict) else None
        gpus = res.get("gpus") if isinstance(res, dict) else None
        if not isinstance(tp, int):
            continue
        if tp > per_node:
            errors.append(f"models[{i}].engine.tensor_parallel_size: {tp} GPUs needed on one "
                          f"node, but nomad.gpus_per_node is {per_node}")
        if isinstance(gpus, int) and gpus < tp:
            errors.append(f"models[{i}].resources.gpus: {gpus} is less than "
                          f"engine.tensor_parallel_size ({tp})")
        elif isinstance(gpus, int) and gpus > per_node:
            errors.append(f"models[{i}].resources.gpus: {gpus} is more than "
                          f"nomad.gpus_per_node ({per_node})")
    return errors


def _port_clashes(data: dict[str, Any]) -> list[str]:
    defaults = {("envoy", "listen_port"): 8080, ("envoy", "admin_port"): 9901,
                ("control_plane", "xds_port"): 18000, ("control_plane", "admin_port"): 18001}
    errors: list[str] = []
    by_port: dict[Any, str] = {}
    for (section, field), fallback in defaults.items():
        sect = data.get(section)
        port = sect.get(field, fallback) if isinstance(sect, dict) else fallback
        name = f"{section}.{field}"
        if not isinstance(port, int):  # reported as a field error
            continue
        if port in by_port:
            errors.append(f"{name}: port {port} is already used by {by_port[port]}")
        by_port.setdefault(port, name)
    return errors
