"""The platform-wide sections of the spec: Envoy, the control plane, Consul, Nomad and
the local dev stack (``caravan up``). Pure, frozen pydantic data; each default is
written here once (cross-field checks read them from ``model_fields``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from caravan.spec import names
from caravan.spec.base import Frozen as _Frozen


class EnvoySpec(_Frozen):
    address: str = "127.0.0.1"
    listen_port: int = Field(8080, ge=1, le=65535)
    admin_port: int = Field(9901, ge=1, le=65535)
    model_header: str = Field(names.MODEL_HEADER, pattern=r"^[a-z0-9-]+$")
    max_connections: int = Field(
        10_000, ge=1, le=1_000_000,
        description="downstream connections Envoy holds at once (overload manager); more are "
        "closed on accept; the stats listener is exempt",
    )
    request_headers_timeout_s: float = Field(
        10.0, gt=0, le=300,
        description="a client has this long from the first byte of a request's headers to the "
        "last, or its connection is closed (slow-headers attack)",
    )


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
    service_prefix: str = Field(names.CONSUL_SERVICE_PREFIX, description="Consul service name = prefix + model name")
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
