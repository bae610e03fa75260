"""The load generator's scheduling, against an in-process fake transport."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from caravan.bench.arrivals import Limits, LoadLevel, Shape
from caravan.bench.dataset import Lengths, RequestSpec, Workload
from caravan.bench.results import LevelResult
from caravan.bench.runner import run_level
from caravan.bench.stats import RequestRecord


class FakeTransport:
    """Answers every request after ``delay_s``; fails the indices in ``fail``."""

    def __init__(self, delay_s: float = 0.005, fail: Sequence[int] = ()) -> None:
        self.delay_s = delay_s
        self.fail = set(fail)
        self.in_flight = 0
        self.max_in_flight = 0
        self.sent: list[RequestSpec] = []
        self.finished: list[tuple[str, int]] = []
        self.prepared = 0

    def prepare(self, specs: Sequence[RequestSpec]) -> None:
        self.prepared += len(specs)

    async def send(self, spec: RequestSpec, t0: float) -> RequestRecord:
        if spec.thread and spec.turn:
            assert (spec.thread, spec.turn - 1) in self.finished, "turn sent too early"
        self.sent.append(spec)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        start = time.perf_counter()
        await asyncio.sleep(self.delay_s)
        end = time.perf_counter()
        self.in_flight -= 1
        self.finished.append((spec.thread, spec.turn))
        status = "UNAVAILABLE" if spec.index in self.fail else "OK"
        return RequestRecord(spec.index, (start - t0) * 1e3, (end - t0) * 1e3, 1.0, (), 1, 2,
                             status, session_id=spec.session_id, turn=spec.turn)


class Sink:
    def __init__(self) -> None:
        self.events: list[str] = []

    def level_started(self, level: LoadLevel, total: int) -> None:
        self.events.append(f"start {level.label} {total}")

    def request_done(self, record: RequestRecord) -> None:
        self.events.append("done")

    def level_finished(self, result: LevelResult) -> None:
        self.events.append(f"end {len(result.records)}")


def run(level: LoadLevel, transport: FakeTransport, workload: Workload | None = None,
        sink: Sink | None = None) -> LevelResult:
    return asyncio.run(run_level(transport, level, workload or Workload(), progress=sink))


@pytest.mark.parametrize("workers", [1, 4, 10], ids=["c1", "c4", "c10"])
def test_fixed_concurrency_is_reached_never_exceeded(workers: int) -> None:
    t = FakeTransport()
    result = run(LoadLevel(Shape.CONCURRENCY, workers, Limits(20)), t)
    assert t.max_in_flight == workers
    assert [r.index for r in result.records] == list(range(20))
    assert result.summary.ok == 20


def test_warmup_is_sent_but_not_recorded() -> None:
    t, sink = FakeTransport(), Sink()
    result = run(LoadLevel(Shape.CONCURRENCY, 2, Limits(5, warmup=3)), t, sink=sink)
    assert len(t.sent) == 8 and t.prepared == 8
    assert len(result.records) == 5
    assert sink.events[0] == "start c=2 5"  # announced after the warm-up
    assert sink.events.count("done") == 5 and sink.events[-1] == "end 5"


def test_same_seed_sends_same_requests() -> None:
    w = Workload(seed=11)
    a, b = FakeTransport(), FakeTransport()
    run(LoadLevel(Shape.CONCURRENCY, 1, Limits(6)), a, w)
    run(LoadLevel(Shape.CONCURRENCY, 1, Limits(6)), b, w)
    assert a.sent == b.sent


def test_max_errors_stops_dispatch() -> None:
    t = FakeTransport(fail=range(100))
    result = run(LoadLevel(Shape.CONCURRENCY, 1, Limits(50, max_errors=3)), t)
    assert (len(result.records), result.stopped) == (3, "max_errors")
    assert result.summary.errors == {"UNAVAILABLE": 3}


def test_duration_limit_stops_dispatch() -> None:
    t = FakeTransport(delay_s=0.02)
    result = run(LoadLevel(Shape.CONCURRENCY, 1, Limits(1000, duration_s=0.1)), t)
    assert result.stopped == "duration"
    assert 2 <= len(result.records) <= 8  # ~0.1 s / 0.02 s, bounded


def test_constant_rate_follows_schedule() -> None:
    t = FakeTransport(delay_s=0.001)
    result = run(LoadLevel(Shape.CONSTANT, 100.0, Limits(10)), t)
    starts = [r.start_ms for r in result.records]
    # requests go out every 10 ms; allow generous scheduling jitter on a busy machine
    assert starts[-1] == pytest.approx(90.0, abs=40.0)
    assert result.client.schedule_max_ms >= 0.0
    assert result.client.loop_samples >= 1


def test_rate_with_concurrency_cap() -> None:
    t = FakeTransport(delay_s=0.03)
    result = run(LoadLevel(Shape.POISSON, 1000.0, Limits(12), max_concurrency=3), t)
    assert t.max_in_flight == 3
    assert result.summary.ok == 12


def test_sessions_turns_in_order_under_concurrency() -> None:
    t = FakeTransport()
    w = Workload(seed=0, turns=3)
    result = run(LoadLevel(Shape.CONCURRENCY, 4, Limits(9)), t, w)  # 3 sessions x 3 turns
    assert result.summary.ok == 9  # FakeTransport asserts turn order itself
    assert len({r.session_id for r in result.records}) == 3


def test_trace_level_sends_at_trace_times_over_the_speedup() -> None:
    from caravan.bench.workloads import Kind, Source, TraceRecord, WorkloadSpec

    trace = tuple(TraceRecord(t, 32, 2, (i,)) for i, t in enumerate((0, 100, 100, 300)))
    source = Source(WorkloadSpec(Kind.TRACE, trace=trace, trace_block_tokens=16))
    transport = FakeTransport(delay_s=0.001)
    level = LoadLevel(Shape.TRACE, 2.0, Limits(requests=10))
    result = asyncio.run(run_level(transport, level, source))
    assert result.summary.requests == 4  # the whole trace, not the requested 10
    starts = [r.start_ms for r in result.records]
    assert starts[1] == pytest.approx(50, abs=25) and starts[3] == pytest.approx(150, abs=25)


def test_levels_send_distinct_prompts() -> None:
    transport = FakeTransport(delay_s=0.0)
    level = LoadLevel(Shape.CONCURRENCY, 2, Limits(requests=5))
    for i in range(2):
        asyncio.run(run_level(transport, level, Workload(seed=1), level_index=i))
    prompts = [s.prompt for s in transport.sent]
    assert len(set(prompts)) == len(prompts) == 10


def test_multi_turn_conversations_wait_for_their_previous_turn() -> None:
    from caravan.bench.workloads import Kind, Source, WorkloadSpec

    source = Source(WorkloadSpec(Kind.MULTI_TURN, Lengths(4), Lengths(2), conversations=2))
    transport = FakeTransport(delay_s=0.002)
    level = LoadLevel(Shape.CONCURRENCY, 6, Limits(requests=30))
    result = asyncio.run(run_level(transport, level, source))
    assert result.summary.ok == 30  # the fake asserts no turn went before its predecessor
    assert transport.max_in_flight <= 6  # the workers: later chats may start while others run
    assert any(s.turn > 0 for s in transport.sent) and all(not s.session_id for s in transport.sent)


class FixedSpecs:
    """A workload of the given specs (measured stream only)."""

    seed = 0

    def __init__(self, specs: tuple[RequestSpec, ...]) -> None:
        self.specs = specs

    def build(self, count: int, stream_id: int = 0) -> tuple[RequestSpec, ...]:
        return self.specs[:count]


class ByThreadDelay(FakeTransport):
    """Answers a request of conversation ``a`` after 30 ms, any other after 2 ms."""

    async def send(self, spec: RequestSpec, t0: float) -> RequestRecord:
        self.delay_s = 0.03 if spec.thread == "a" else 0.002
        return await super().send(spec, t0)


def test_a_free_worker_takes_another_conversations_ready_turn() -> None:
    # a0 b0 a1 b1 ... in order, 2 workers: b's turns must not wait behind a's slow ones
    # (each conversation's next turn goes as soon as its previous one ends).
    order = [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2), ("b", 3), ("b", 4)]
    specs = tuple(RequestSpec(i, "p", 1, 1, turn=t, conversation=c) for i, (c, t) in enumerate(order))
    transport = ByThreadDelay()
    level = LoadLevel(Shape.CONCURRENCY, 2, Limits(requests=len(specs)))
    asyncio.run(run_level(transport, level, FixedSpecs(specs)))
    done = transport.finished
    assert sorted(done) == sorted(order)  # every turn, none before its predecessor (the fake)
    assert done.index(("b", 4)) < done.index(("a", 1))
    assert transport.max_in_flight == 2


class SlowThread(FakeTransport):
    """Answers a request of conversation ``slow`` after 150 ms, any other after 2 ms."""

    async def send(self, spec: RequestSpec, t0: float) -> RequestRecord:
        self.delay_s = 0.15 if spec.thread == "slow" else 0.002
        return await super().send(spec, t0)


def test_a_conversation_keeps_its_worker_until_it_ends() -> None:
    # The multi-turn generator's order with 2 slots: slot 0 runs "a" (3 turns), slot 1
    # "slow" (1 turn) then "c", "d" (1 turn each). With 2 workers "a"'s next turn must go
    # the moment its previous one ends, before any new conversation starts (KubeAI's
    # runner: at most 2 threads at a time, a slot takes a new thread when its own ends).
    order = [("a", 0), ("slow", 0), ("a", 1), ("c", 0), ("a", 2), ("d", 0)]
    specs = tuple(RequestSpec(i, "p", 1, 1, turn=t, conversation=c) for i, (c, t) in enumerate(order))
    transport = SlowThread()
    level = LoadLevel(Shape.CONCURRENCY, 2, Limits(requests=len(specs)))
    asyncio.run(run_level(transport, level, FixedSpecs(specs)))
    sent = [(s.thread, s.turn) for s in transport.sent]
    assert sorted(sent) == sorted(order) and transport.max_in_flight == 2
    assert sent.index(("a", 2)) < sent.index(("c", 0))  # "a" never waited for a new chat
