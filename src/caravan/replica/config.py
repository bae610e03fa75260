"""Settings of one ``caravan replica`` process (pure, frozen, validated)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from caravan.replica.engine import EngineConfig

MIB = 1 << 20


@dataclass(frozen=True)
class ReplicaConfig:
    """Everything a replica needs. Durations: ``*_s`` seconds, ``*_ms`` milliseconds
    (real time, except the engine's, which are simulated and scaled by ``time_scale``).

    Raises ValueError naming the field when a value is out of range.
    """

    model: str
    port: int
    metrics_port: int
    host: str = "127.0.0.1"
    replica_id: str = ""  # default: "<model>-<port>"
    time_scale: float = 1.0
    engine: EngineConfig = field(default_factory=EngineConfig)
    mean_output_tokens: int = 300
    load_delay_s: float = 0.0
    stream_interval_ms: float = 50.0
    max_input_bytes: int = MIB
    drain_timeout_s: float = 30.0
    fixed_ms_per_token: float | None = None  # None: the batching engine serves requests

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model: must not be empty")
        for name in ("port", "metrics_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise ValueError(f"{name}: must be a TCP port 0-65535 (got {value})")
        if self.port and self.port == self.metrics_port:
            raise ValueError(f"metrics_port: must differ from port (both {self.port})")
        _positive("time_scale", self.time_scale, strict=True)
        _positive("load_delay_s", self.load_delay_s)
        _positive("stream_interval_ms", self.stream_interval_ms)
        _positive("drain_timeout_s", self.drain_timeout_s)
        if self.fixed_ms_per_token is not None:
            _positive("fixed_ms_per_token", self.fixed_ms_per_token)
        if self.max_input_bytes < 1:
            raise ValueError(f"max_input_bytes: must be >= 1 (got {self.max_input_bytes})")
        if self.mean_output_tokens < 1:
            raise ValueError(f"mean_output_tokens: must be >= 1 (got {self.mean_output_tokens})")
        if not self.replica_id:
            object.__setattr__(self, "replica_id", f"{self.model}-{self.port}")


def _positive(name: str, value: float, strict: bool = False) -> None:
    ok = math.isfinite(value) and (value > 0 if strict else value >= 0)
    if not ok:
        raise ValueError(f"{name}: must be a number {'>' if strict else '>='} 0 (got {value})")
