"""What Caravan's Triton model reads when it loads: the engine and simulator settings
(pure, frozen, JSON round-trip).

The real vLLM backend reads its engine arguments from ``<model>/1/model.json``; the
simulated one reads this file, ``<model>/1/caravan_simulator.json``, written by
``caravan.triton.repository``. Durations: ``*_s`` real seconds, ``*_ms`` real
milliseconds, except the engine's, which are simulated and scaled by ``time_scale``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from caravan.simulator.engine import EngineConfig

SETTINGS_FILE = "caravan_simulator.json"


@dataclass(frozen=True)
class SimulatorSettings:
    """Raises ValueError naming the field when a value is out of range."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    time_scale: float = 1.0
    stream_interval_ms: float = 50.0
    load_delay_s: float = 0.0
    fixed_ms_per_token: float | None = None  # None: the batching engine serves requests
    fault_file: str = ""  # when this file exists, the engine is dead (tests' failure switch)

    def __post_init__(self) -> None:
        _check("time_scale", self.time_scale, strict=True)
        _check("stream_interval_ms", self.stream_interval_ms)
        _check("load_delay_s", self.load_delay_s)
        if self.fixed_ms_per_token is not None:
            _check("fixed_ms_per_token", self.fixed_ms_per_token)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SimulatorSettings:
        """Parse ``to_json``'s output. Raises ValueError on a bad file."""
        data: dict[str, Any] = json.loads(text)
        engine = EngineConfig(**data.pop("engine", {}))
        return cls(engine=engine, **data)


def _check(name: str, value: float, strict: bool = False) -> None:
    ok = math.isfinite(value) and (value > 0 if strict else value >= 0)
    if not ok:
        raise ValueError(f"{name}: must be a number {'>' if strict else '>='} 0 (got {value})")
