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
# Fault modes of the simulated engine (a test seam: never set in production). ``fault_file``
# absent: none; holding ``FAULT_HANG``: the engine hangs (a gray failure); any other
# content (e.g. empty, from ``touch``): the engine is dead.
FAULT_NONE, FAULT_DEAD, FAULT_HANG = "none", "dead", "hang"


@dataclass(frozen=True)
class SimulatorSettings:
    """Raises ValueError naming the field when a value is out of range."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    time_scale: float = 1.0
    stream_interval_ms: float = 50.0
    load_delay_s: float = 0.0
    fixed_ms_per_token: float | None = None  # None: the batching engine serves requests
    fault_file: str = ""  # tests' failure switch: see ``fault_mode``

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


def fault_mode(path: str) -> str:
    """The fault the file at ``path`` injects (``FAULT_NONE`` / ``FAULT_DEAD`` /
    ``FAULT_HANG``; ``path`` "" means no fault file). Reads the file; never raises (a
    file that vanishes or cannot be read while being looked at counts as absent)."""
    if not path:
        return FAULT_NONE
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(64)
    except OSError:
        return FAULT_NONE
    return FAULT_HANG if text.strip() == FAULT_HANG else FAULT_DEAD


def _check(name: str, value: float, strict: bool = False) -> None:
    ok = math.isfinite(value) and (value > 0 if strict else value >= 0)
    if not ok:
        raise ValueError(f"{name}: must be a number {'>' if strict else '>='} 0 (got {value})")
