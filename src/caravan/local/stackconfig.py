"""What a local stack is given: its ports (``LocalPorts``) and the options that vary
between ``caravan up``, ``caravan demo``, tests and benchmarks (``StackOptions``). Pure."""

from __future__ import annotations

from dataclasses import dataclass, field

from caravan.local.process import free_port
from caravan.spec import LocalSpec, PlatformSpec
from caravan.triton.launcher import ReplicaOptions


@dataclass(frozen=True)
class LocalPorts:
    """Every port the local stack listens on (all on 127.0.0.1)."""

    envoy_listen: int
    envoy_admin: int
    xds: int
    xds_admin: int
    prometheus: int

    @classmethod
    def from_spec(cls, spec: PlatformSpec) -> LocalPorts:
        return cls(spec.envoy.listen_port, spec.envoy.admin_port, spec.control_plane.xds_port,
                   spec.control_plane.admin_port, spec.local.prometheus_port)

    @classmethod
    def free(cls) -> LocalPorts:
        """Fresh OS-chosen ports, for tests running side by side."""
        return cls(free_port(), free_port(), free_port(), free_port(), free_port())

    def apply(self, spec: PlatformSpec) -> PlatformSpec:
        """The spec with these ports and loopback addresses (what the children are given)."""
        envoy = spec.envoy.model_copy(update={"address": "127.0.0.1", "listen_port": self.envoy_listen,
                                              "admin_port": self.envoy_admin})
        cp = spec.control_plane.model_copy(update={"address": "127.0.0.1", "xds_port": self.xds,
                                                   "admin_port": self.xds_admin})
        return spec.model_copy(update={"envoy": envoy, "control_plane": cp})


@dataclass(frozen=True)
class StackOptions:
    """What varies between `caravan up`, `caravan demo` and tests."""

    # the replicas' (overrides replica.time_scale); default: the spec's local.time_scale
    time_scale: float = LocalSpec.model_fields["time_scale"].default
    prometheus: bool = True
    replica: ReplicaOptions = field(default_factory=ReplicaOptions)
    drain_grace_s: float = 1.0  # DRAINING in Envoy before SIGTERM
    ready_timeout_s: float = 60.0
    # infrastructure children restarted when they die (caravan.local.infra); others are
    # reported and left down
    auto_restart: frozenset[str] = frozenset({"xds", "envoy", "prometheus"})
