"""A served model's part of the platform spec: engine, replicas, resources, routing,
simulator, SLOs, autoscaling.

Pure, frozen pydantic data (``caravan.spec.base.Frozen``): safe to share between
threads and tasks. The platform-wide sections are in ``caravan.spec.sections``, the
whole document in ``caravan.spec.platform``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from caravan.spec import names
from caravan.spec.autoscaling import AutoscalingSpec
from caravan.spec.base import Frozen as _Frozen
from caravan.spec.security import UpstreamTls

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
    max_num_batched_tokens: int = Field(
        8192, ge=1, description="tokens one engine step processes at most (decodes first, then "
        "prefill chunks); 8192 is vLLM's default for its API server on a GPU of >= 70 GiB "
        "such as an H100 (vllm/engine/arg_utils.py, EngineArgs.get_batch_defaults)",
    )
    dtype: str = "auto"
    enable_prefix_caching: bool = True

    @model_validator(mode="after")
    def _budget_holds_every_decode(self) -> EngineArgs:
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens: must be >= max_num_seqs ({self.max_num_seqs}) so "
                f"every running sequence can decode in each step (got {self.max_num_batched_tokens})"
            )
        return self


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


class ReplicaResources(_Frozen):
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

    session_header: str = Field(names.SESSION_HEADER, pattern=r"^[a-z0-9-]+$")
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
    per_try_timeout_s: float = Field(
        5.0, gt=0, le=3600, description="a stream attempt with no response by then is retried "
        "on another replica and counts against its replica (time to first token; stream=false: "
        "the whole answer)")
    stream_idle_timeout_s: float = Field(
        10.0, gt=0, le=3600, description="a stream silent this long ends (the longest gap "
        "between two responses, and the wait for the first, retries included)")
    max_stream_duration_s: float = Field(
        600.0, gt=0, le=86400, description="a stream lasting this long ends however busy it "
        "is (a client trickling data, a never-ending answer); also the cap on a client's "
        "grpc-timeout")

    @model_validator(mode="after")
    def _timeouts_ordered(self) -> Routing:
        problems = []
        if self.stream_idle_timeout_s <= self.per_try_timeout_s:
            problems.append(f"stream_idle_timeout_s: must be above per_try_timeout_s "
                            f"({self.per_try_timeout_s:g}), or a retried stream is cut before "
                            "its retry can answer")
        longest = max(self.stream_idle_timeout_s, self.per_try_timeout_s)
        if self.max_stream_duration_s <= longest:
            problems.append(f"max_stream_duration_s: must be above stream_idle_timeout_s "
                            f"({self.stream_idle_timeout_s:g}) and per_try_timeout_s "
                            f"({self.per_try_timeout_s:g}), or every stream is cut before "
                            "those timeouts can act")
        if problems:
            raise ValueError("; ".join(problems))
        return self

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


@dataclass(frozen=True)
class EngineProfile:
    """The calibrated costs of one GPU for the simulated engine (docs/prefix-caching.md,
    Calibration, gives every number's source): ms per decode step at batch 1, ms per
    extra running sequence, ms per prefilled (uncached) prompt token, KV tokens."""

    decode_ms_per_step: float
    decode_ms_per_seq: float
    prefill_ms_per_token: float
    kv_cache_tokens: int


# ``h100``: an 8B model in BF16 on one H100 (the default everywhere). ``l4``: Llama 3.1 8B
# in FP8 on one NVIDIA L4 under vLLM with gpu_memory_utilization 0.9, as KubeAI's
# multi-turn benchmark ran it.
ENGINE_PROFILES: dict[str, EngineProfile] = {
    "h100": EngineProfile(13.0, 0.08, 0.12, 200_000),
    "l4": EngineProfile(36.5, 0.2, 0.25, 80_000),
}
_H100 = ENGINE_PROFILES["h100"]


class SimulatorParams(_Frozen):
    """Knobs of the continuous-batching simulator that stands in for Triton+vLLM locally.

    ``profile`` names a calibrated GPU (``ENGINE_PROFILES``) whose costs fill every cost
    field the spec leaves unset; the default, ``h100``, models a 7-8B model on one H100:
    ~13 ms per output token at batch 1, so ~300 output tokens take ~4 s (the reference
    table at concurrency 1). Fields set explicitly override the profile's.
    """

    profile: Literal["h100", "l4"] = Field("h100", description="calibrated GPU: h100 | l4")
    decode_ms_per_step: float = Field(_H100.decode_ms_per_step, gt=0,
                                      description="decode step cost at batch 1, ms")
    decode_ms_per_seq: float = Field(_H100.decode_ms_per_seq, ge=0,
                                     description="extra step cost per running seq, ms")
    prefill_ms_per_token: float = Field(_H100.prefill_ms_per_token, ge=0,
                                        description="prefill cost per prompt token, ms")
    kv_cache_tokens: int = Field(_H100.kv_cache_tokens, ge=1024, description="KV-cache token budget")
    mean_output_tokens: int = Field(300, ge=1, description="when max_tokens is not given")

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: object) -> object:
        """Fill the cost fields the input leaves unset from its profile (an unknown
        profile is left for the field's own check to report)."""
        if isinstance(data, dict):
            profile = ENGINE_PROFILES.get(str(data.get("profile", "h100")))
            if profile is not None:
                return {**asdict(profile), **data}
        return data


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
    resources: ReplicaResources = ReplicaResources()
    routing: Routing = Routing()
    simulator: SimulatorParams = SimulatorParams()
    slo: SloSpec = SloSpec()
    autoscaling: AutoscalingSpec | None = Field(None, description="scaling policy")
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
        return names.cluster_name(self.name)

    @property
    def nomad_job(self) -> str:
        """The Nomad job id that runs this model's replicas (task group ``names.NOMAD_GROUP``)."""
        return names.nomad_job(self.name)

    @property
    def gpus(self) -> int:
        return self.engine.tensor_parallel_size if self.resources.gpus is None else self.resources.gpus
