"""caravan.triton.generation: one request's life on the simulated engine, driven on an
event loop with a small time scale (a 13 ms step takes 13 us; each test runs in ms)
(docs/triton-contract.md C21, C22, C25, C27, C31, C33, C36)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from caravan.simulator.driver import EngineDriver
from caravan.simulator.engine import Engine, EngineConfig
from caravan.triton import generation
from caravan.triton.contract import ContractError, GenerateRequest, Piece, Sampling
from caravan.triton.generation import ENGINE_DEAD_MESSAGE, EngineDeadError, Generator, Progress

T = TypeVar("T")
SCALE = 0.001


def run(body: Callable[[Generator, EngineDriver], Awaitable[T]], *, scale: float = SCALE,
        interval_s: float = 0.0, max_len: int = 4096) -> T:
    async def main() -> T:
        driver = EngineDriver(Engine(EngineConfig(max_model_len=max_len)), scale, interval_s)
        task = asyncio.create_task(driver.run())
        try:
            return await asyncio.wait_for(body(Generator(driver, max_len), driver), 10)
        finally:
            task.cancel()

    return asyncio.run(main())


def req(prompt: str = "the caravan rests", *, stream: bool = False, prepend: bool | None = None,
        max_tokens: int = 40, seed: int | None = None) -> GenerateRequest:
    return GenerateRequest(prompt, 0, stream, (not stream) if prepend is None else prepend,
                           Sampling(max_tokens=max_tokens, seed=seed))


async def collect(gen: Generator, r: GenerateRequest, stats: list[Progress] | None = None,
                  cancelled: Callable[[], bool] = lambda: False) -> list[Piece]:
    sink = stats if stats is not None else []
    return [p async for p in gen.run(r, sink.append, cancelled)]


def test_streaming_pieces_are_deltas_and_only_the_last_is_final() -> None:
    async def body(gen: Generator, _: EngineDriver) -> tuple[list[Piece], list[Piece]]:
        return await collect(gen, req(stream=True)), await collect(gen, req(prepend=False))

    pieces, whole = run(body, scale=0.02, interval_s=0.001)  # 40 tokens in ~10 ms
    assert len(pieces) > 1
    assert [p.final for p in pieces] == [False] * (len(pieces) - 1) + [True]
    assert [p.finish_reason for p in pieces] == [None] * (len(pieces) - 1) + ["length"]
    assert all(p.num_output_tokens > 0 and p.text for p in pieces), "no empty delta"
    assert sum(p.num_output_tokens for p in pieces) == 40
    totals = [p.total_output_tokens for p in pieces]
    assert totals == sorted(totals) and totals[-1] == 40
    assert "".join(p.text for p in pieces) == whole[0].text
    assert all(p.num_input_tokens == 3 for p in pieces)


@pytest.mark.parametrize(("prepend", "prefix"), [(True, "the caravan rests "), (False, " ")],
                         ids=["prompt-prepended", "excluded"])
def test_non_streaming_one_final_piece_with_the_whole_text(prepend: bool, prefix: str) -> None:
    async def body(gen: Generator, _: EngineDriver) -> list[Piece]:
        return await collect(gen, req(prepend=prepend, max_tokens=25))

    (piece,) = run(body, interval_s=0.0005)
    assert piece.final and piece.finish_reason == "length"
    assert piece.text.startswith(prefix) and len(piece.token_words) == 25
    assert piece.num_output_tokens == piece.total_output_tokens == 25


def test_output_is_capped_by_the_model_length() -> None:
    async def body(gen: Generator, _: EngineDriver) -> list[Piece]:
        return await collect(gen, req("a b c d e f", max_tokens=100))

    (piece,) = run(body, max_len=16)
    assert piece.num_output_tokens == 10 and piece.finish_reason == "length"


def test_prompt_without_room_fails_with_vllms_wording() -> None:
    async def body(gen: Generator, _: EngineDriver) -> list[Piece]:
        return await collect(gen, req(" ".join(["w"] * 16)))

    with pytest.raises(ContractError, match=r"The decoder prompt \(length 16\) is longer than the maximum model "
                                            r"length of 16\."):
        run(body, max_len=16)


def test_same_prompt_same_text_and_seed_changes_it() -> None:
    async def body(gen: Generator, _: EngineDriver) -> list[str]:
        return [(await collect(gen, r))[0].text for r in (req(), req(), req(seed=1), req(seed=1))]

    a, b, c, d = run(body)
    assert a == b and c == d and a != c


def test_dead_engine_fails_later_requests_and_check_health() -> None:
    async def body(gen: Generator, _: EngineDriver) -> None:
        gen.check_health()
        gen.kill()
        with pytest.raises(EngineDeadError, match=r"^EngineCore encountered an issue"):
            gen.check_health()
        with pytest.raises(EngineDeadError) as err:
            await collect(gen, req())
        assert str(err.value) == ENGINE_DEAD_MESSAGE

    run(body)


def test_engine_dying_fails_requests_in_flight_and_frees_the_engine() -> None:
    async def body(gen: Generator, driver: EngineDriver) -> tuple[list[Piece], int]:
        got: list[Piece] = []

        async def consume() -> None:
            async for p in gen.run(req(stream=True, max_tokens=3000), lambda _: None):
                got.append(p)

        task = asyncio.create_task(consume())
        while not got:
            await asyncio.sleep(0.001)
        gen.kill()
        with pytest.raises(EngineDeadError):
            await task
        return got, driver.in_flight

    got, in_flight = run(body, scale=0.01, interval_s=0.001)
    assert got and not got[-1].final and in_flight == 0


def test_cancelled_stream_stops_without_a_final_piece() -> None:
    flag = {"cancelled": False}

    async def body(gen: Generator, driver: EngineDriver) -> tuple[list[Piece], list[Progress], int]:
        pieces: list[Piece] = []
        stats: list[Progress] = []
        async for p in gen.run(req(stream=True, max_tokens=3000), stats.append, lambda: flag["cancelled"]):
            pieces.append(p)
            flag["cancelled"] = True  # the response thread saw is_cancelled() after this send
        return pieces, stats, driver.in_flight

    pieces, stats, in_flight = run(body, scale=0.01, interval_s=0.001)
    assert len(pieces) == 1 and not pieces[0].final
    assert in_flight == 0
    assert all(s.finished is None for s in stats)  # a cancelled request never finishes
    assert 0 < sum(s.new_tokens for s in stats) < 3000


def test_cancelled_non_streaming_request_sends_the_text_so_far() -> None:
    calls = {"n": 0}

    def cancelled() -> bool:
        calls["n"] += 1
        return calls["n"] >= 3  # noticed at the third engine output

    async def body(gen: Generator, _: EngineDriver) -> list[Piece]:
        return await collect(gen, req(max_tokens=3000), cancelled=cancelled)

    (piece,) = run(body, scale=0.01, interval_s=0.001)
    assert piece.final and piece.finish_reason is None
    assert piece.text.startswith("the caravan rests ")
    assert 0 < piece.num_output_tokens < 3000 and piece.num_output_tokens == len(piece.token_words)


def test_progress_is_reported_per_output_like_vllm_iteration_stats() -> None:
    async def body(gen: Generator, _: EngineDriver) -> list[Progress]:
        stats: list[Progress] = []
        await collect(gen, req("one two three four", stream=True, max_tokens=50), stats)
        return stats

    stats = run(body, scale=0.01, interval_s=0.001)
    first, rest = stats[0], stats[1:]
    assert first.prompt_tokens == 4 and first.ttft_s is not None and first.ttft_s >= 0
    assert all(s.prompt_tokens == 0 and s.ttft_s is None for s in rest)
    assert sum(s.new_tokens for s in stats) == 50
    assert all(s.itl_s is not None and s.itl_s >= 0 for s in rest)
    assert [s.finished is not None for s in stats] == [False] * (len(stats) - 1) + [True]
    done = stats[-1].finished
    assert done is not None and (done.prompt_tokens, done.output_tokens) == (4, 50)
    assert 0 <= done.ttft_s <= done.e2e_s


def test_fixed_mode_answers_in_one_piece_after_tokens_times_ms() -> None:
    async def main() -> tuple[list[Piece], list[Progress], float]:
        gen = Generator(None, 4096, fixed_ms_per_token=1.0)
        stats: list[Progress] = []
        start = time.monotonic()
        pieces = await collect(gen, req(stream=True, max_tokens=20), stats)
        return pieces, stats, time.monotonic() - start

    pieces, stats, took = asyncio.run(main())
    assert len(pieces) == 1 and pieces[0].final and pieces[0].num_output_tokens == 20
    assert took >= 0.019
    (progress,) = stats
    assert progress.finished is not None and (progress.prompt_tokens, progress.new_tokens) == (3, 20)


def test_fake_clock_times_the_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    now = {"t": 100.0}
    real_sleep = asyncio.sleep

    async def sleep(delay: float, *args: Any) -> None:  # the fake clock moves instead
        now["t"] += 2.5
        await real_sleep(0)

    monkeypatch.setattr(generation.asyncio, "sleep", sleep)

    async def main() -> list[Progress]:
        gen = Generator(None, 4096, fixed_ms_per_token=10.0, clock=lambda: now["t"])
        stats: list[Progress] = []
        await collect(gen, req(max_tokens=4), stats)
        return stats

    (progress,) = asyncio.run(main())
    assert progress.finished is not None
    assert (progress.finished.e2e_s, progress.finished.ttft_s, progress.ttft_s) == (2.5, 2.5, 2.5)


def test_prefix_cache_hits_are_reported_and_a_next_turn_hits_the_answer() -> None:
    doc = " ".join(f"w{i}" for i in range(100))  # 100 words = 100 tokens

    async def body(gen: Generator, _: EngineDriver) -> tuple[list[Progress], list[Progress], list[Progress]]:
        first: list[Progress] = []
        pieces = await collect(gen, req(doc, max_tokens=40, prepend=False), first)
        second: list[Progress] = []
        await collect(gen, req(doc + " another question", max_tokens=5), second)
        turn: list[Progress] = []  # the whole first turn (prompt + its answer) and more
        await collect(gen, req(doc + pieces[-1].text + " and then", max_tokens=5), turn)
        return first, second, turn

    first, second, turn = run(body)
    assert (first[0].prompt_tokens, first[0].cached_tokens) == (100, 0)
    assert (second[0].prompt_tokens, second[0].cached_tokens) == (102, 96)  # 6 full blocks
    # 142 tokens; the first turn cached 100 + 39 computed = 139 tokens: 8 full blocks
    assert (turn[0].prompt_tokens, turn[0].cached_tokens) == (142, 128)
    assert all(p.cached_tokens == 0 for p in first[1:] + second[1:])
