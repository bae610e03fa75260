"""Is the client the bottleneck? Schedule lag and event-loop lag, measured in ms.

* Schedule lag: in rate mode, how late each request was dispatched compared with its
  scheduled send time (before any concurrency cap, which is intended back-pressure).
* Event-loop lag: a probe task sleeps ``interval_ms`` again and again; the overshoot
  of each wake-up is how long other callbacks hogged the loop (CPU starvation).

``ClientHealth`` is the pure summary kept with each level's result; ``warnings``
turns it into human-readable messages when thresholds are crossed. Not thread-safe:
use from the one event loop that runs the level.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from caravan.bench.stats import percentile

Clock = Callable[[], float]  # monotonic seconds


@dataclass(frozen=True)
class LagThresholds:
    schedule_ms: float = 10.0  # a request later than this is "behind schedule"
    loop_ms: float = 20.0  # a loop wake-up later than this means CPU starvation


@dataclass(frozen=True)
class ClientHealth:
    """Lag figures of one level (ms). ``late`` counts requests behind schedule."""

    schedule_p99_ms: float = 0.0
    schedule_max_ms: float = 0.0
    late: int = 0
    loop_p99_ms: float = 0.0
    loop_max_ms: float = 0.0
    loop_samples: int = 0
    thresholds: LagThresholds = field(default=LagThresholds())


def client_health(
    schedule_lags_ms: list[float], loop_lags_ms: list[float], th: LagThresholds
) -> ClientHealth:
    def p99(xs: list[float]) -> float:
        return percentile(xs, 99) if xs else 0.0

    return ClientHealth(
        schedule_p99_ms=p99(schedule_lags_ms),
        schedule_max_ms=max(schedule_lags_ms, default=0.0),
        late=sum(1 for x in schedule_lags_ms if x > th.schedule_ms),
        loop_p99_ms=p99(loop_lags_ms),
        loop_max_ms=max(loop_lags_ms, default=0.0),
        loop_samples=len(loop_lags_ms),
        thresholds=th,
    )


def warnings(h: ClientHealth, label: str) -> list[str]:
    """Messages for a level whose client fell behind (empty when healthy)."""
    out = []
    if h.late:
        out.append(
            f"{label}: {h.late} request(s) sent > {h.thresholds.schedule_ms:g} ms behind "
            f"schedule (p99 {h.schedule_p99_ms:.1f} ms, max {h.schedule_max_ms:.1f} ms): "
            "the client could not keep up, rates are understated"
        )
    if h.loop_p99_ms > h.thresholds.loop_ms:
        out.append(
            f"{label}: event loop lag p99 {h.loop_p99_ms:.1f} ms > "
            f"{h.thresholds.loop_ms:g} ms: the client is CPU-starved, latencies include "
            "client delay"
        )
    return out


class LoopLagProbe:
    """Background task measuring event-loop wake-up overshoot. ``start`` then ``stop``."""

    def __init__(self, clock: Clock, interval_ms: float = 10.0) -> None:
        self._clock = clock
        self._interval_s = interval_ms / 1000.0
        self.samples_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            before = self._clock()
            await asyncio.sleep(self._interval_s)
            over = (self._clock() - before - self._interval_s) * 1000.0
            self.samples_ms.append(max(0.0, over))

    async def stop(self) -> list[float]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.samples_ms
