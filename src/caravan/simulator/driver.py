"""The asyncio driver: one task per process runs the pure ``Engine`` against the clock.

* Simulated time = (clock() - start) / time_scale, in ms. ``time_scale`` multiplies
  every simulated duration: 0.01 makes a 4 s request take 40 ms of real time.
* The loop sleeps until the step in flight ends (never less than ``min_sleep_s``,
  1 ms by default; several short steps are then run in one wake-up, with exactly the
  same simulated timeline) and waits on an event while the engine is idle.
  There is no timer per request.
* Delivery: each request has a ``Handle`` whose asyncio queue receives ``Update``s
  (total tokens generated so far, done flag). Non-streaming handles get only the final
  update. Streaming handles get one on their first token, then at most one per
  ``stream_interval_s`` of real time (coalescing tokens; 0 = every wake-up, i.e. one
  per token while steps last >= 1 ms), and the final one.

Thread-safety: everything (submit, cancel, run) must be called on the event loop that
runs ``run()``. ``stats()`` returns an immutable snapshot and may be read anywhere.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from caravan.simulator.engine import Advance, Engine, EngineStats, SeqRequest


@dataclass(frozen=True)
class Update:
    tokens: int  # total output tokens generated so far
    done: bool


class Handle:
    """One request's view of the engine. Times are clock() seconds (None until known);
    ``admitted_s`` / ``first_token_s`` are the engine's simulated event times mapped
    back to the clock, so they do not include the driver's wake-up lag.
    ``cached_tokens``: prompt tokens the engine found in its prefix cache (set at
    admission)."""

    __slots__ = (
        "admitted_s",
        "arrival_s",
        "cached_tokens",
        "delivered",
        "done",
        "first_token_s",
        "id",
        "output_tokens",
        "queue",
        "streaming",
    )

    def __init__(self, rid: str, output_tokens: int, streaming: bool, arrival_s: float) -> None:
        self.id = rid
        self.output_tokens = output_tokens
        self.streaming = streaming
        self.arrival_s = arrival_s
        self.admitted_s: float | None = None
        self.cached_tokens = 0
        self.first_token_s: float | None = None
        self.delivered = 0
        self.done = False
        self.queue: asyncio.Queue[Update] = asyncio.Queue()

    def push(self, tokens: int, done: bool) -> None:
        self.delivered = tokens
        self.done = done
        self.queue.put_nowait(Update(tokens, done))


class EngineObserver(Protocol):
    """Told after every engine advance (e.g. to update metrics). ``ms_to_s`` converts
    simulated ms to real seconds. Must be cheap and must not raise."""

    def engine_advanced(self, adv: Advance, stats: EngineStats, ms_to_s: float) -> None: ...


class EngineDriver:
    """Runs ``engine`` in real time scaled by ``time_scale`` (> 0)."""

    def __init__(
        self,
        engine: Engine,
        time_scale: float,
        stream_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        observer: EngineObserver | None = None,
        min_sleep_s: float = 0.001,
    ) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale: must be > 0 (got {time_scale})")
        if not stream_interval_s >= 0:
            raise ValueError(f"stream_interval_s: must be >= 0 (got {stream_interval_s})")
        self._engine = engine
        self._scale = time_scale
        self._interval = stream_interval_s
        self._clock = clock
        self._observer = observer
        self._min_sleep = min_sleep_s
        self._t0 = clock()
        self._ids = itertools.count()
        self._handles: dict[str, Handle] = {}
        self._streaming: dict[str, Handle] = {}
        self._next_tick = 0.0
        self._wake = asyncio.Event()
        self._stats = engine.stats()

    @property
    def in_flight(self) -> int:
        """Requests submitted and not yet finished or cancelled."""
        return len(self._handles)

    def stats(self) -> EngineStats:
        """The engine's state after the last advance (immutable snapshot)."""
        return self._stats

    def sim_ms(self, t_s: float) -> float:
        return (t_s - self._t0) * 1000.0 / self._scale

    def submit(self, prompt_tokens: int, output_tokens: int, streaming: bool,
               block_hashes: tuple[int, ...] = ()) -> Handle:
        """Queue a request (``block_hashes``: see ``SeqRequest``). Raises
        engine.RequestRejected if it can never run."""
        now = self._clock()
        rid = str(next(self._ids))
        self._engine.submit(
            SeqRequest(rid, prompt_tokens, output_tokens, self.sim_ms(now), block_hashes))
        handle = Handle(rid, output_tokens, streaming, now)
        self._handles[rid] = handle
        if streaming:
            self._streaming[rid] = handle
        self._stats = self._engine.stats()
        self._wake.set()
        return handle

    def cancel(self, handle: Handle) -> None:
        """Forget a request (its client went away); frees its engine slot. Idempotent."""
        if self._handles.pop(handle.id, None) is not None:
            self._streaming.pop(handle.id, None)
            self._engine.cancel(handle.id)
            self._stats = self._engine.stats()

    async def run(self) -> None:
        """The loop. Runs until cancelled."""
        while True:
            now = self._clock()
            self._advance(now)
            delay = self._next_delay(now)
            if delay is None:
                self._wake.clear()
                await self._wake.wait()
            else:
                await asyncio.sleep(max(delay, self._min_sleep))

    def _advance(self, now: float) -> None:
        adv = self._engine.advance(self.sim_ms(now))
        ms_to_s = self._scale / 1000.0
        for a in adv.admitted:
            h = self._handles.get(a.id)
            if h is not None:
                h.admitted_s = self._t0 + a.admitted_ms * ms_to_s
                h.cached_tokens = a.cached_tokens
        for f in adv.first_tokens:
            h = self._handles.get(f.id)
            if h is None:
                continue
            h.first_token_s = self._t0 + f.t_ms * ms_to_s
            if h.streaming and h.delivered == 0:
                h.push(self._engine.progress(f.id), False)
        for fin in adv.finished:
            h = self._handles.pop(fin.id, None)
            self._streaming.pop(fin.id, None)
            if h is not None:
                h.push(fin.output_tokens, True)
        if self._streaming and now >= self._next_tick:
            self._tick()
            self._next_tick = now + self._interval
        self._stats = self._engine.stats()
        if self._observer is not None:
            self._observer.engine_advanced(adv, self._stats, ms_to_s)

    def _tick(self) -> None:
        progress = self._engine.progress
        for rid, h in self._streaming.items():
            n = progress(rid)
            if n > h.delivered:
                h.push(n, False)

    def _next_delay(self, now: float) -> float | None:
        event_ms = self._engine.next_event_ms()
        if event_ms is None:
            return None
        delay = (event_ms - self.sim_ms(now)) * self._scale / 1000.0
        if self._streaming and self._interval > 0:
            delay = min(delay, self._next_tick - now)
        return delay
