"""The asyncio driver, on the real clock with a tiny time scale (runs in milliseconds)."""

from __future__ import annotations

import asyncio

import pytest

from caravan.simulator.driver import EngineDriver, Handle, Update
from caravan.simulator.engine import Advance, Engine, EngineConfig, EngineStats, RequestRejected


class CountingObserver:
    def __init__(self) -> None:
        self.generated = 0
        self.admitted = 0
        self.last: EngineStats | None = None

    def engine_advanced(self, adv: Advance, stats: EngineStats, ms_to_s: float) -> None:
        self.generated += adv.generated_tokens
        self.admitted += len(adv.admitted)
        self.last = stats


async def collect(handle: Handle, timeout_s: float = 5.0) -> list[Update]:
    updates: list[Update] = []
    while not updates or not updates[-1].done:
        updates.append(await asyncio.wait_for(handle.queue.get(), timeout_s))
    return updates


def run_with_driver(scale: float, interval_s: float, body, observer=None, cfg=None):  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        driver = EngineDriver(Engine(cfg or EngineConfig()), scale, interval_s, observer=observer)
        task = asyncio.create_task(driver.run())
        try:
            return await body(driver)
        finally:
            task.cancel()

    return asyncio.run(main())


def test_non_streaming_requests_get_only_the_final_update() -> None:
    async def body(driver: EngineDriver) -> list[list[Update]]:
        handles = [driver.submit(10, 50, streaming=False) for _ in range(3)]
        return [await collect(h) for h in handles]

    obs = CountingObserver()
    results = run_with_driver(0.001, 0.0, body, obs)
    assert results == [[Update(50, True)]] * 3
    assert obs.generated == 150 and obs.admitted == 3
    assert obs.last is not None and obs.last.running == 0


def test_streaming_with_zero_interval_delivers_growing_counts() -> None:
    async def body(driver: EngineDriver) -> tuple[list[Update], Handle]:
        h = driver.submit(0, 40, streaming=True)
        return await collect(h), h

    # 40 steps of 13 ms * 0.5 = 6.5 ms each: about one update per step (a loaded
    # machine may merge a few, hence the loose bound)
    updates, handle = run_with_driver(0.5, 0.0, body)
    counts = [u.tokens for u in updates]
    assert counts == sorted(counts) and counts[-1] == 40
    assert len(counts) >= 8
    assert handle.first_token_s is not None and handle.admitted_s is not None
    assert handle.arrival_s <= handle.admitted_s <= handle.first_token_s


def test_streaming_updates_are_coalesced_by_the_interval() -> None:
    async def body(driver: EngineDriver) -> list[Update]:
        return await collect(driver.submit(0, 40, streaming=True))

    # the request lasts ~0.1 s real time; with a 10 s interval only the first token
    # and the final update are sent
    updates = run_with_driver(0.2, 10.0, body)
    assert [u.done for u in updates] == [False, True]
    assert updates[0].tokens >= 1 and updates[-1] == Update(40, True)


def test_cancel_frees_the_engine_slot() -> None:
    async def body(driver: EngineDriver) -> tuple[int, list[Update]]:
        slow = driver.submit(0, 4000, streaming=False)
        await asyncio.sleep(0.01)
        driver.cancel(slow)
        driver.cancel(slow)  # idempotent
        fast = driver.submit(0, 5, streaming=False)
        return driver.in_flight, await collect(fast)

    in_flight, updates = run_with_driver(0.01, 0.0, body, cfg=EngineConfig(max_num_seqs=1))
    assert in_flight == 1
    assert updates == [Update(5, True)]


def test_rejected_requests_raise_before_queueing() -> None:
    async def body(driver: EngineDriver) -> int:
        with pytest.raises(RequestRejected):
            driver.submit(4000, 200, streaming=False)
        return driver.in_flight

    assert run_with_driver(1.0, 0.0, body) == 0


@pytest.mark.parametrize(
    ("scale", "interval", "message"),
    [(0.0, 0.0, "time_scale: must be > 0"), (1.0, -1.0, "stream_interval_s: must be >= 0")],
    ids=["scale", "interval"],
)
def test_driver_arguments_are_validated(scale: float, interval: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EngineDriver(Engine(EngineConfig()), scale, interval)
