"""The load generator: runs load levels against a ``Transport`` and records every request.

Public entry point (used by ``caravan bench`` and ``caravan demo``)::

    result = await run_sweep(target, model, levels, workload, progress=None, slos=())

Per level: ``limits.warmup`` warm-up requests (same shape, not recorded), then
``limits.requests`` measured requests. Fixed concurrency runs N workers that each
send their next request when the previous one ends; rate shapes dispatch at the
scheduled offsets (``arrivals.arrival_offsets``, seeded by the workload seed and the
level index), a trace at its requests' own ``send_at_s`` over the level's speed-up,
both with an optional cap on in-flight requests. Level ``i`` sends the workload's
stream ``2i`` (warm-up: ``2i+1``), so no level repeats another's prompts (which a
prefix-caching engine would serve from its cache). A turn of a session or
conversation is sent only after its previous turn has finished; at fixed concurrency
N workers keep at most N conversations open, each conversation's next turn going the
moment its previous one ends (``ReadyTurns``). Dispatching stops at the
duration limit or once ``max_errors`` requests have failed; requests already in
flight finish (each is bounded by the target's timeout).

Single event loop; not thread-safe. The clock is injectable (monotonic seconds).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from caravan.bench.arrivals import LoadLevel, Shape, arrival_offsets
from caravan.bench.dataset import RequestSpec
from caravan.bench.lag import LagThresholds, LoopLagProbe, client_health, warnings
from caravan.bench.results import LevelResult, SweepResult
from caravan.bench.stats import RequestRecord, Slo, summarize
from caravan.bench.triton import Target, TritonTransport

log = logging.getLogger(__name__)

Clock = Callable[[], float]
DEFAULT_THRESHOLDS = LagThresholds()


class Transport(Protocol):
    """Sends one request and measures it; never raises for server/network errors."""

    def prepare(self, specs: Sequence[RequestSpec]) -> None: ...

    async def send(self, spec: RequestSpec, t0: float) -> RequestRecord: ...


class RequestSource(Protocol):
    """Where a level's requests come from (``dataset.Workload``, ``workloads.Source``):
    ``build(count, stream_id)`` is deterministic; each stream an independent series."""

    @property
    def seed(self) -> int: ...

    def build(self, count: int, stream_id: int = 0) -> tuple[RequestSpec, ...]: ...


class ProgressSink(Protocol):
    """Receives progress events (called on the event loop; must not block)."""

    def level_started(self, level: LoadLevel, total: int) -> None: ...

    def request_done(self, record: RequestRecord) -> None: ...

    def level_finished(self, result: LevelResult) -> None: ...


class SessionGate:
    """Holds turn ``t`` of a session until turn ``t-1`` has finished."""

    def __init__(self) -> None:
        self._events: dict[tuple[str, int], asyncio.Event] = {}

    def _event(self, session: str, turn: int) -> asyncio.Event:
        return self._events.setdefault((session, turn), asyncio.Event())

    async def wait(self, spec: RequestSpec) -> None:
        if spec.thread and spec.turn > 0:
            await self._event(spec.thread, spec.turn - 1).wait()

    def done(self, spec: RequestSpec) -> None:
        if spec.thread:
            self._event(spec.thread, spec.turn).set()

    def is_open(self, spec: RequestSpec) -> bool:
        """True when ``spec`` may be sent now (first turn, or its previous turn finished)."""
        return not spec.thread or spec.turn == 0 or self._event(spec.thread, spec.turn - 1).is_set()


class ReadyTurns:
    """The specs of a closed-loop level as a pool of conversations, run the way a chat
    client's threads run them (KubeAI's benchmark runner: a thread sends its next turn
    the moment its previous one ends, and a slot takes the next thread only when its
    thread has ended). A free worker takes a turn released by ``finished`` first, and
    only when none is ready the first turn of the next conversation in ``specs`` order
    (a spec without a conversation or session is a conversation of one turn). So with N
    workers at most N conversations are open at a time, none waits between its turns
    while a worker is free, and a free worker never waits for one conversation while
    another has a turn ready. Later turns are taken in ``specs`` order within their
    conversation; each must follow its previous turn there (the gate holds it
    otherwise). One event loop."""

    def __init__(self, specs: Sequence[RequestSpec], gate: SessionGate) -> None:
        self._gate = gate
        self._starts: collections.deque[RequestSpec] = collections.deque()
        self._rest: dict[str, collections.deque[RequestSpec]] = {}
        seen: set[str] = set()
        for spec in specs:
            if spec.thread and spec.thread in seen:
                self._rest.setdefault(spec.thread, collections.deque()).append(spec)
            else:
                seen.add(spec.thread)
                self._starts.append(spec)
        self._ready: collections.deque[RequestSpec] = collections.deque()
        self._changed = asyncio.Event()

    def poll(self) -> RequestSpec | None:
        """The next spec that may go now (a released turn, else the next conversation's
        first turn), or None when none may go now."""
        if self._ready:
            return self._ready.popleft()
        if self._starts:
            return self._starts.popleft()
        return None

    async def next(self, stop: Callable[[], bool]) -> RequestSpec | None:
        """The next spec that may go now; None when every spec was handed out or ``stop()``
        (checked again whenever a request finishes)."""
        while not stop():
            spec = self.poll()
            if spec is not None:
                return spec
            if not self._rest:
                return None
            self._changed.clear()
            await self._changed.wait()
        return None

    def finished(self, spec: RequestSpec) -> None:
        """``spec`` ended (after ``SessionGate.done``): release its conversation's next
        turn and wake the workers waiting for one."""
        queue = self._rest.get(spec.thread)
        if queue and self._gate.is_open(queue[0]):
            self._ready.append(queue.popleft())
            if not queue:
                del self._rest[spec.thread]
        self._changed.set()


@dataclass
class _Run:
    """State of one phase (warm-up or measured) of one level."""

    transport: Transport
    t0: float
    clock: Clock
    deadline: float | None = None
    max_errors: int | None = None
    sink: ProgressSink | None = None
    stopped: str = ""

    def __post_init__(self) -> None:
        self.records: list[RequestRecord] = []
        self.errors = 0
        self.gate = SessionGate()

    def should_stop(self) -> bool:
        if not self.stopped and self.deadline is not None and self.clock() >= self.deadline:
            self.stopped = "duration"
        return bool(self.stopped)

    async def one(self, spec: RequestSpec) -> None:
        if spec.turn > 0 and spec.thread:  # no gate coroutine on the common path
            await self.gate.wait(spec)
        try:
            rec = await self.transport.send(spec, self.t0)
        finally:
            self.gate.done(spec)
        self.records.append(rec)
        if not rec.ok:
            self.errors += 1
            if self.max_errors is not None and self.errors >= self.max_errors:
                self.stopped = self.stopped or "max_errors"
        if self.sink is not None:
            self.sink.request_done(rec)


async def _by_concurrency(run: _Run, specs: Sequence[RequestSpec], workers: int) -> None:
    """``workers`` closed-loop workers, each sending the next spec ``ReadyTurns`` gives
    when its previous request ends."""
    turns = ReadyTurns(specs, run.gate)

    async def worker() -> None:
        while True:
            spec = await turns.next(run.should_stop)
            if spec is None:
                return
            try:
                await run.one(spec)
            finally:
                turns.finished(spec)

    await asyncio.gather(*(worker() for _ in range(max(1, workers))))


async def _by_rate(
    run: _Run, specs: Sequence[RequestSpec], offsets: Sequence[float], cap: int | None
) -> list[float]:
    """Dispatch at ``t0 + offset``; returns schedule lags in ms."""
    sem = asyncio.Semaphore(cap) if cap else None
    tasks: list[asyncio.Task[None]] = []
    lags: list[float] = []

    async def capped(spec: RequestSpec) -> None:
        try:
            await run.one(spec)
        finally:
            if sem is not None:
                sem.release()

    for spec, offset in zip(specs, offsets, strict=True):
        due = run.t0 + offset
        delay = due - run.clock()
        if delay > 0:
            await asyncio.sleep(delay)
        if run.should_stop():
            break
        lags.append(max(0.0, (run.clock() - due) * 1000.0))
        if sem is not None:
            await sem.acquire()
        tasks.append(asyncio.create_task(capped(spec)))
    await asyncio.gather(*tasks)
    return lags


def settle_heap() -> None:
    """Collect garbage, then freeze every live object (``gc.freeze``) so the measured
    phase's collections scan only objects it creates: full collections over the
    imported libraries' objects (~80,000: grpc, numpy, pydantic...) are CPU the load
    generator would otherwise spend mid-level. Objects made later are collected
    as usual."""
    gc.collect()
    gc.freeze()


def _offsets(level: LoadLevel, specs: Sequence[RequestSpec], seed: int) -> tuple[float, ...]:
    """Send times (s from the level's start): the specs' own ``send_at_s`` divided by
    the speed-up for TRACE, else drawn at the level's rate."""
    if level.shape is Shape.TRACE:
        return tuple((s.send_at_s or 0.0) / level.value for s in specs)
    return arrival_offsets(level.value, len(specs), level.shape is Shape.POISSON, seed)


def _warmup_workers(level: LoadLevel) -> int:
    if level.shape is Shape.CONCURRENCY:
        return int(level.value)
    return level.max_concurrency or max(1, math.ceil(level.value))


async def run_level(
    transport: Transport,
    level: LoadLevel,
    workload: RequestSource,
    level_index: int = 0,
    slos: Sequence[Slo] = (),
    progress: ProgressSink | None = None,
    clock: Clock = time.perf_counter,
    thresholds: LagThresholds = DEFAULT_THRESHOLDS,
) -> LevelResult:
    """Run one level (warm-up, then measured requests) and summarize it."""
    lim = level.limits
    warm = workload.build(lim.warmup, stream_id=2 * level_index + 1) if lim.warmup else ()
    specs = workload.build(lim.requests, stream_id=2 * level_index)
    transport.prepare([*warm, *specs])
    if warm:
        await _by_concurrency(_Run(transport, clock(), clock), warm, _warmup_workers(level))
    settle_heap()
    if progress is not None:
        progress.level_started(level, len(specs))
    t0 = clock()
    deadline = None if lim.duration_s is None else t0 + lim.duration_s
    run = _Run(transport, t0, clock, deadline, lim.max_errors, progress)
    probe = LoopLagProbe(clock)
    probe.start()
    sched: list[float] = []
    try:
        if level.shape is Shape.CONCURRENCY:
            await _by_concurrency(run, specs, int(level.value))
        else:
            offsets = _offsets(level, specs, workload.seed + level_index)
            sched = await _by_rate(run, specs, offsets, level.max_concurrency)
    finally:
        loop_lags = await probe.stop()
    records = tuple(sorted(run.records, key=lambda r: r.index))
    health = client_health(sched, loop_lags, thresholds)
    warn = tuple(warnings(health, level.label))
    for w in warn:
        log.warning(w, extra={"level": level.label})
    result = LevelResult(level, records, summarize(records, slos), health, run.stopped, warn)
    if progress is not None:
        progress.level_finished(result)
    return result


async def run_sweep(
    target: Target,
    model: str,
    levels: Sequence[LoadLevel],
    workload: RequestSource,
    progress: ProgressSink | None = None,
    slos: Sequence[Slo] = (),
    meta: dict[str, str] | None = None,
    clock: Clock = time.perf_counter,
) -> SweepResult:
    """Run every level in order against ``target`` (Envoy or a replica) for ``model``.

    ``meta`` is stored as the result's run metadata (see ``caravan.bench.meta``).
    Raises ValueError for an empty ``levels``; request failures never raise (they are
    counted by status in each level's summary).
    """
    if not levels:
        raise ValueError("levels: at least one load level is required")
    transport = TritonTransport(target, model, clock)
    await transport.open()
    try:
        results = []
        for i, level in enumerate(levels):
            results.append(await run_level(transport, level, workload, i, slos, progress, clock))
    finally:
        await transport.close()
    return SweepResult(dict(meta or {}), tuple(results))
