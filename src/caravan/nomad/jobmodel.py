"""The in-memory Nomad job model: one structure, two encodings (HCL and API JSON).

Pure frozen dataclasses, safe to share between threads. Field names follow Nomad's
jobspec; every duration is a whole number of **seconds** (``*_s``): the HCL
encoder writes ``"30s"``/``"5m"``, the JSON encoder nanoseconds, as the API wants.
Maps are tuples of ``(key, value)`` pairs, kept in the order given, so encodings
are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Port:
    """A network port label. ``static`` reserves a host port; else Nomad picks one.
    ``to`` is the port inside the task's network namespace (docker bridge).
    ``host_network``: the Nomad client ``host_network`` whose address the port is
    bound and registered on (None: Nomad's default network)."""

    label: str
    to: int | None = None
    static: int | None = None
    host_network: str | None = None


@dataclass(frozen=True)
class Network:
    ports: tuple[Port, ...]
    mode: str = "host"

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(p.label for p in self.ports)


@dataclass(frozen=True)
class CheckRestart:
    """Restart the task after ``limit`` failed checks, ignoring the first ``grace_s``."""

    limit: int
    grace_s: int
    ignore_warnings: bool = False


@dataclass(frozen=True)
class Check:
    name: str
    type: str  # "grpc" | "http" | "tcp" | "script"
    port: str | None  # None for script checks
    interval_s: int
    timeout_s: int
    path: str | None = None  # http checks only
    check_restart: CheckRestart | None = None
    # grpc checks over TLS (Nomad api/services.go ServiceCheck ``grpc_use_tls`` /
    # ``tls_skip_verify``, passed on to Consul by createCheckReg). Written only when true.
    grpc_use_tls: bool = False
    tls_skip_verify: bool = False
    # script checks: ``command`` + ``args`` run inside ``task`` (required for a group
    # service); exit 0 passing, 1 warning, anything else critical.
    command: str | None = None
    args: tuple[str, ...] = ()
    task: str | None = None


@dataclass(frozen=True)
class Service:
    """A Consul service registered for every allocation of the group."""

    name: str
    port: str
    tags: tuple[str, ...] = ()
    meta: Pairs = ()
    checks: tuple[Check, ...] = ()
    provider: str = "consul"


@dataclass(frozen=True)
class Device:
    name: str  # e.g. "nvidia/gpu"
    count: int


@dataclass(frozen=True)
class Resources:
    cpu_mhz: int
    memory_mb: int
    devices: tuple[Device, ...] = ()


@dataclass(frozen=True)
class Volume:
    """A group volume request (``type = "host"``: a client's host_volume)."""

    name: str
    source: str
    type: str = "host"
    read_only: bool = False


@dataclass(frozen=True)
class VolumeMount:
    volume: str
    destination: str
    read_only: bool = False


@dataclass(frozen=True)
class Template:
    """A consul-template rendered into the task dir before start (and on change)."""

    destination: str
    data: str
    change_mode: str = "restart"
    env: bool = False  # load the rendered KEY=value lines into the task environment
    perms: str | None = None  # octal file mode, e.g. "0400" (Nomad's default: "644")
    uid: int | None = None  # file owner (host uid; None: the Nomad agent's user)


@dataclass(frozen=True)
class DockerConfig:
    """The docker driver's ``config`` block (lowercase keys in HCL and JSON alike)."""

    image: str
    entrypoint: tuple[str, ...] = ()  # overrides the image's ENTRYPOINT
    command: str | None = None
    args: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    network_mode: str | None = None
    shm_size: int | None = None  # bytes


@dataclass(frozen=True)
class Task:
    name: str
    config: DockerConfig
    resources: Resources
    env: Pairs = ()
    templates: tuple[Template, ...] = ()
    volume_mounts: tuple[VolumeMount, ...] = ()
    kill_timeout_s: int | None = None
    kill_signal: str | None = None
    driver: str = "docker"


@dataclass(frozen=True)
class UpdateStrategy:
    max_parallel: int = 1
    health_check: str = "checks"
    min_healthy_time_s: int = 30
    healthy_deadline_s: int = 900
    progress_deadline_s: int = 1200
    canary: int = 0
    auto_revert: bool = True
    auto_promote: bool = False


@dataclass(frozen=True)
class MigrateStrategy:
    """How allocations placed outside a deployment (node drain, reschedule) are judged
    healthy: checks passing for ``min_healthy_time_s`` within ``healthy_deadline_s``
    (Nomad's default is 10 s / 5 min: ``structs.DefaultMigrateStrategy``)."""

    max_parallel: int = 1
    health_check: str = "checks"
    min_healthy_time_s: int = 10
    healthy_deadline_s: int = 300


@dataclass(frozen=True)
class RestartPolicy:
    attempts: int
    interval_s: int
    delay_s: int
    mode: str = "fail"


@dataclass(frozen=True)
class ReschedulePolicy:
    delay_s: int
    max_delay_s: int
    delay_function: str = "exponential"
    unlimited: bool = True


Number = int | float


@dataclass(frozen=True)
class AutoscalerCheck:
    """A ``check`` of a Nomad Autoscaler policy: an APM query over ``query_window_s`` and
    a strategy plugin with its (numeric) parameters."""

    name: str
    query: str
    query_window_s: int
    strategy: str
    params: tuple[tuple[str, Number], ...]
    source: str = "prometheus"
    group: str | None = None
    on_error: str | None = None


@dataclass(frozen=True)
class AutoscalerPolicy:
    """The ``policy`` block of a ``scaling`` block, read by the stock Nomad Autoscaler
    (``policy/nomad/parser.go``); Nomad itself only stores it."""

    evaluation_interval_s: int
    cooldown_s: int
    cooldown_on_scale_up_s: int
    on_check_error: str
    checks: tuple[AutoscalerCheck, ...]


@dataclass(frozen=True)
class Scaling:
    min: int
    max: int
    enabled: bool = True
    policy: AutoscalerPolicy | None = None


@dataclass(frozen=True)
class TaskGroup:
    name: str
    count: int
    tasks: tuple[Task, ...]
    network: Network | None = None
    services: tuple[Service, ...] = ()
    volumes: tuple[Volume, ...] = ()
    update: UpdateStrategy | None = None
    migrate: MigrateStrategy | None = None
    restart: RestartPolicy | None = None
    reschedule: ReschedulePolicy | None = None
    scaling: Scaling | None = None
    shutdown_delay_s: int | None = None
    meta: Pairs = ()


@dataclass(frozen=True)
class Job:
    id: str
    datacenters: tuple[str, ...]
    groups: tuple[TaskGroup, ...]
    type: str = "service"
    namespace: str = "default"
    region: str | None = None
    priority: int = 50
    meta: Pairs = ()
    comment: str = field(default="", compare=False)  # header comment in HCL only
