"""Load shapes (pure): fixed concurrency, constant or Poisson request rate, sweeps.

A ``LoadLevel`` is one point of a sweep. Arrival schedules are offsets in **seconds**
from the start of the level; a Poisson schedule is drawn from ``random.Random(seed)``
so the same seed gives the same schedule.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass


class Shape(enum.Enum):
    CONCURRENCY = "concurrency"  # N workers, each sends its next request when one ends
    CONSTANT = "constant"  # requests at a fixed rate (req/s), evenly spaced
    POISSON = "poisson"  # requests at a mean rate (req/s), exponential gaps
    TRACE = "trace"  # requests at their trace times divided by a speed-up (value)


@dataclass(frozen=True)
class Limits:
    """Bounds of one level. ``requests`` measured requests (after ``warmup`` more);
    stop dispatching after ``duration_s`` seconds (None: no time limit) or once
    ``max_errors`` requests have failed (None: no error limit)."""

    requests: int = 100
    warmup: int = 0
    duration_s: float | None = None
    max_errors: int | None = None

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise ValueError(f"requests: must be >= 1, got {self.requests}")
        if self.warmup < 0:
            raise ValueError(f"warmup: must be >= 0, got {self.warmup}")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ValueError(f"duration_s: must be > 0 seconds, got {self.duration_s}")
        if self.max_errors is not None and self.max_errors < 1:
            raise ValueError(f"max_errors: must be >= 1, got {self.max_errors}")


@dataclass(frozen=True)
class LoadLevel:
    """One load level. ``value`` is the concurrency (CONCURRENCY), the rate in
    requests/s (CONSTANT, POISSON) or the speed-up of a trace's clock (TRACE: 2 sends
    at half the recorded times); ``max_concurrency`` caps in-flight requests of an
    open-loop shape (None: uncapped)."""

    shape: Shape
    value: float
    limits: Limits = Limits()
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        if not self.value > 0 or math.isinf(self.value):
            raise ValueError(f"{self.shape.value}: must be a positive number, got {self.value}")
        if self.shape is Shape.CONCURRENCY and self.value != int(self.value):
            raise ValueError(f"concurrency: must be a whole number, got {self.value}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"max_concurrency: must be >= 1, got {self.max_concurrency}")

    @property
    def is_rate(self) -> bool:
        return self.shape is not Shape.CONCURRENCY

    @property
    def label(self) -> str:
        """``c=10``, ``rate=2``, ``poisson=2`` or ``trace=1`` (plus ``/cap=N``)."""
        value = f"{self.value:g}"
        names = {Shape.CONCURRENCY: "c", Shape.CONSTANT: "rate", Shape.POISSON: "poisson",
                 Shape.TRACE: "trace"}
        cap = f"/cap={self.max_concurrency}" if self.max_concurrency else ""
        return f"{names[self.shape]}={value}{cap}"


AXIS_TITLES = {Shape.CONCURRENCY: "Concurrency", Shape.CONSTANT: "Rate (req/s)",
               Shape.POISSON: "Rate (req/s)", Shape.TRACE: "Trace speed-up"}


def arrival_offsets(rate: float, count: int, poisson: bool, seed: int) -> tuple[float, ...]:
    """Send times (seconds from level start) of ``count`` requests at ``rate`` req/s.

    Constant: ``i / rate``. Poisson: cumulative sums of exponential gaps with mean
    ``1 / rate``, the first request at 0. Deterministic for a given ``seed``.
    """
    if not rate > 0:
        raise ValueError(f"rate: must be > 0 requests/s, got {rate}")
    if not poisson:
        return tuple(i / rate for i in range(count))
    rng = random.Random(seed)
    out: list[float] = []
    t = 0.0
    for i in range(count):
        if i:
            t += rng.expovariate(rate)
        out.append(t)
    return tuple(out)


def parse_values(text: str, option: str) -> tuple[float, ...]:
    """Parse a sweep list like ``1,5,10`` (for ``--concurrency`` / ``--rate``).

    ValueError names the option and the bad item.
    """
    items = [p.strip() for p in text.split(",") if p.strip()]
    if not items:
        raise ValueError(f"{option}: expected a comma-separated list of numbers, got {text!r}")
    out: list[float] = []
    for item in items:
        try:
            v = float(item)
        except ValueError:
            raise ValueError(f"{option}: {item!r} is not a number (in {text!r})") from None
        if not v > 0 or math.isinf(v):
            raise ValueError(f"{option}: {item!r} must be a positive number")
        out.append(v)
    return tuple(out)


def parse_counts(text: str, levels: int, option: str = "--requests") -> tuple[int, ...]:
    """Requests per level: one count for every level (``100``) or one per level
    (``100,100,500``). ValueError names the option and what is expected."""
    values = parse_values(text, option)
    if any(v != int(v) for v in values):
        raise ValueError(f"{option}: counts must be whole numbers, got {text!r}")
    counts = tuple(int(v) for v in values)
    if len(counts) == 1:
        return counts * levels
    if len(counts) != levels:
        raise ValueError(
            f"{option}: got {len(counts)} counts for {levels} load levels; "
            "give one count, or one per level"
        )
    return counts
