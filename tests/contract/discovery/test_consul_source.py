"""``ConsulReplicaSource`` (py-consul over real HTTP) against the Consul fake."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from tests.fakes.consul import ConsulFake

from caravan.discovery.consul import ConsulReplicaSource
from caravan.discovery.consul_settings import ConsulSettings
from caravan.discovery.types import HealthStatus, ReplicaSet
from caravan.logs import JsonFormatter
from caravan.spec import ConsulSpec

SVC = "triton-llama"
TIMEOUT_S = 5.0


@pytest.fixture
def fake() -> Iterator[ConsulFake]:
    with ConsulFake() as f:
        yield f


def settings(fake: ConsulFake, **kw: Any) -> ConsulSettings:
    base: dict[str, Any] = {"host": "127.0.0.1", "port": fake.port, "wait_s": 1.0,
                            "timeout_s": 2.0}
    return ConsulSettings(**{**base, **kw})


class Watch:
    """Consumes ``source.updates(models)`` in a task; tests read what it yielded."""

    def __init__(self, source: ConsulReplicaSource, models: list[str]) -> None:
        self.source, self.models = source, models
        self.queue: asyncio.Queue[ReplicaSet] = asyncio.Queue()

    async def _pump(self) -> None:
        async for rs in self.source.updates(self.models):
            self.queue.put_nowait(rs)

    async def until(self, pred: Callable[[ReplicaSet], bool], timeout: float = TIMEOUT_S
                    ) -> ReplicaSet:
        """The first yielded set matching ``pred``; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            rs = await asyncio.wait_for(self.queue.get(), max(0.01, deadline - time.monotonic()))
            if pred(rs):
                return rs

    async def quiet(self, seconds: float) -> list[ReplicaSet]:
        """Everything yielded during ``seconds``."""
        await asyncio.sleep(seconds)
        out = []
        while not self.queue.empty():
            out.append(self.queue.get_nowait())
        return out


@asynccontextmanager
async def watching(source: ConsulReplicaSource, models: list[str]) -> AsyncIterator[Watch]:
    w = Watch(source, models)
    task = asyncio.create_task(w._pump())
    try:
        yield w
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def source_for(fake: ConsulFake, registry: CollectorRegistry | None = None,
               **kw: Any) -> ConsulReplicaSource:
    sleep = kw.pop("sleep", asyncio.sleep)
    return ConsulReplicaSource(settings(fake, **kw), registry or CollectorRegistry(),
                               rng=random.Random(1), backoff_initial_s=0.05, backoff_max_s=0.2,
                               sleep=sleep, query_burst=10_000)  # pacing: see test_consul_pacing


def ids(rs: ReplicaSet) -> list[str]:
    return [r.id for r in rs.replicas]


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


def test_register_and_deregister_show_up(fake: ConsulFake) -> None:
    fake.register(SVC, "a", address="10.0.0.1", port=8001, meta={"metrics_port": "8002"})

    async def scenario() -> None:
        async with watching(source_for(fake), ["llama", "mistral"]) as w:
            first = await w.until(lambda rs: rs.model == "llama")
            (a,) = first.replicas
            assert (a.address, a.port, a.metrics_port, a.zone, a.health) == (
                "10.0.0.1", 8001, 8002, "dc1", HealthStatus.HEALTHY)
            fake.register(SVC, "b", address="10.0.0.2")
            assert ids(await w.until(lambda rs: rs.model == "llama")) == ["a", "b"]
            fake.deregister("a")
            assert ids(await w.until(lambda rs: rs.model == "llama")) == ["b"]
            fake.register("triton-mistral", "m1", address="10.0.0.9")
            assert ids(await w.until(lambda rs: rs.model == "mistral" and bool(rs.replicas))) == [
                "m1"]
    run(scenario())


def test_passing_only_by_default(fake: ConsulFake) -> None:
    fake.register(SVC, "a", address="10.0.0.1")
    fake.register(SVC, "b", address="10.0.0.2", check_status="warning")
    fake.register(SVC, "c", address="10.0.0.3", check_status="critical")

    async def scenario() -> None:
        async with watching(source_for(fake), ["llama"]) as w:
            assert ids(await w.until(lambda rs: True)) == ["a"]
            fake.set_check("c", "passing")
            assert ids(await w.until(lambda rs: True)) == ["a", "c"]
            fake.set_check("a", "critical")
            assert ids(await w.until(lambda rs: True)) == ["c"]
    run(scenario())


def test_warning_allowed_by_spec_uses_warning_weight(fake: ConsulFake) -> None:
    fake.register(SVC, "b", address="10.0.0.2", check_status="warning",
                  weights={"Passing": 10, "Warning": 3})

    async def scenario() -> None:
        async with watching(source_for(fake, allow_warning=True), ["llama"]) as w:
            (b,) = (await w.until(lambda rs: True)).replicas
            assert (b.id, b.weight, b.health) == ("b", 3, HealthStatus.HEALTHY)
            fake.set_check("b", "passing")
            assert [r.weight for r in (await w.until(lambda rs: True)).replicas] == [10]
    run(scenario())


def test_address_falls_back_to_node_address(fake: ConsulFake) -> None:
    fake.register(SVC, "a", address="", node="gpu-7", node_address="10.7.7.7")

    async def scenario() -> None:
        async with watching(source_for(fake), ["llama"]) as w:
            (a,) = (await w.until(lambda rs: True)).replicas
            assert a.endpoint == "10.7.7.7:8001"
    run(scenario())


def test_maintenance_and_draining_tag_drain(fake: ConsulFake) -> None:
    fake.register(SVC, "a", address="10.0.0.1")
    fake.register(SVC, "b", address="10.0.0.2")

    def health(rs: ReplicaSet) -> dict[str, HealthStatus]:
        return {r.id: r.health for r in rs.replicas}

    async def scenario() -> None:
        async with watching(source_for(fake), ["llama"]) as w:
            await w.until(lambda rs: len(rs.replicas) == 2)
            fake.maintenance("a", True, "rolling upgrade")
            got = await w.until(lambda rs: True)
            assert health(got) == {"a": HealthStatus.DRAINING, "b": HealthStatus.HEALTHY}
            assert [r.id for r in got.serving] == ["b"]
            fake.register(SVC, "b", address="10.0.0.2", tags=["draining"])
            got = await w.until(lambda rs: health(rs).get("b") == HealthStatus.DRAINING)
            fake.maintenance("a", False)
            got = await w.until(lambda rs: True)
            assert health(got) == {"a": HealthStatus.HEALTHY, "b": HealthStatus.DRAINING}
    run(scenario())


def test_malformed_entries_skipped_counted_and_logged_once(
    fake: ConsulFake, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    fake.register(SVC, "good", address="10.0.0.1")
    fake.register(SVC, "zero-port", address="10.0.0.2", port=0)
    fake.register(SVC, "host", address="replica.example")
    fake.register(SVC, "other", address="10.0.0.3", meta={"model": "mistral"})
    fake.inject_raw(SVC, {"Node": {"Node": "node-1", "Address": "10.0.0.4"},  # same (node, id)
                          "Service": {"ID": "good", "Service": SVC, "Port": 9}, "Checks": []})
    fake.inject_raw(SVC, ["not", "an", "entry"])

    def count(reason: str) -> float | None:
        return registry.get_sample_value("caravan_discovery_skipped_entries_total",
                                         {"model": "llama", "reason": reason})

    async def scenario() -> None:
        async with watching(source_for(fake, registry), ["llama"]) as w:
            assert ids(await w.until(lambda rs: True)) == ["good"]
            for i in range(3):  # more responses with the same malformed entries
                fake.register(SVC, f"extra-{i}", address=f"10.0.1.{i + 1}")
                await w.until(lambda rs, i=i: f"extra-{i}" in ids(rs))
    with caplog.at_level(logging.WARNING, logger="caravan.discovery.consul"):
        run(scenario())
    assert {r: count(r) for r in ("bad_port", "bad_address", "model_mismatch", "duplicate_id",
                                  "not_an_object")} == dict.fromkeys(
        ("bad_port", "bad_address", "model_mismatch", "duplicate_id", "not_an_object"), 1.0)
    skipped_logs = [(r.service_id, r.reason) for r in caplog.records  # type: ignore[attr-defined]
                    if r.getMessage() == "consul entry skipped"]
    assert sorted(skipped_logs) == sorted(set(skipped_logs)) and len(skipped_logs) == 5


def test_index_going_backwards_resets_to_zero(fake: ConsulFake) -> None:
    fake.register(SVC, "a", address="10.0.0.1")
    high = 500
    fake.reset_index(high)  # start high, so going "backwards" is visible

    async def scenario() -> None:
        async with watching(source_for(fake, wait_s=0.5), ["llama"]) as w:
            await w.until(lambda rs: True)
            await asyncio.sleep(0.2)  # the loop is now blocking on index >= 500
            t_reset = time.monotonic()
            fake.reset_index(3)
            fake.register(SVC, "b", address="10.0.0.2")  # index 4 < 500
            assert ids(await w.until(lambda rs: True)) == ["a", "b"]
            fake.register(SVC, "c", address="10.0.0.3")
            assert ids(await w.until(lambda rs: True)) == ["a", "b", "c"]
            after = [r.query.get("index", ["0"])[0] for r in fake.requests if r.at > t_reset]
            assert "0" in after, "no restart of the loop after the index went backwards"
            restart = after.index("0")
            assert all(int(i) < high for i in after[restart:]), after
    run(scenario())


def test_consul_down_keeps_last_set_backs_off_and_recovers(fake: ConsulFake) -> None:
    registry = CollectorRegistry()
    delays: list[float] = []

    async def recording_sleep(s: float) -> None:
        delays.append(s)
        await asyncio.sleep(s)

    fake.register(SVC, "a", address="10.0.0.1")
    fake.register(SVC, "b", address="10.0.0.2")

    async def scenario() -> None:
        src = source_for(fake, registry, sleep=recording_sleep)
        async with watching(src, ["llama"]) as w:
            assert ids(await w.until(lambda rs: True)) == ["a", "b"]
            fake.stop()
            fake.deregister("a")  # happens while we cannot see it
            assert await w.quiet(1.0) == []  # nothing new: the last good set stands
            errors = registry.get_sample_value("caravan_discovery_errors_total",
                                               {"model": "llama"})
            assert errors is not None and errors >= 3
            # a sleep after every failed query (in each of the 4 loops -- 3 watches and the
            # reader -- the last one's may not have begun), each at most the cap; a model
            # read's retry sleeps what is left of its delay (>= 0.025 s) once it is due
            assert errors - 4 <= len(delays) <= errors
            assert all(0.02 <= d <= 0.2 for d in delays)
            fake.restart()
            assert ids(await w.until(lambda rs: True)) == ["b"]
            fake.register(SVC, "c", address="10.0.0.3")
            assert ids(await w.until(lambda rs: True)) == ["b", "c"]
    run(scenario())


def test_http_timeout_bounds_a_silent_consul(fake: ConsulFake) -> None:
    registry = CollectorRegistry()
    fake.register(SVC, "a", address="10.0.0.1")
    fake.stall(True)

    async def scenario() -> None:
        async with watching(source_for(fake, registry, timeout_s=0.3), ["llama"]) as w:
            assert await w.quiet(1.0) == []
            assert (registry.get_sample_value("caravan_discovery_errors_total",
                                              {"model": "llama"}) or 0) >= 1
            fake.stall(False)
            assert ids(await w.until(lambda rs: True)) == ["a"]
    run(scenario())


def test_acl_token_sent_and_never_logged(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "9f3c2b1a-7d6e-4c5b-8a9f-0e1d2c3b4a59"
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "not-the-resolved-token")  # py-consul would prefer it
    formatter = JsonFormatter("test")
    with ConsulFake(token=token) as f:
        f.register(SVC, "a", address="10.0.0.1")
        good = ConsulReplicaSource.from_spec(
            ConsulSpec(address=f.address, wait_s=1), CollectorRegistry(),
            env={"CONSUL_HTTP_TOKEN": token})
        bad_registry = CollectorRegistry()
        bad = ConsulReplicaSource(settings(f, token=token + "-wrong"), bad_registry,
                                  rng=random.Random(0), backoff_initial_s=0.05, backoff_max_s=0.1)

        async def scenario() -> None:
            async with watching(good, ["llama"]) as w, watching(bad, ["llama"]) as wb:
                assert ids(await w.until(lambda rs: True)) == ["a"]
                assert await wb.quiet(0.5) == []  # 403 ACL not found: never yields
        with caplog.at_level(logging.DEBUG):
            run(scenario())
        sent = {r.token for r in f.requests}
    assert sent == {token, token + "-wrong"}
    assert bad_registry.get_sample_value("caravan_discovery_errors_total", {"model": "llama"})
    text = "\n".join(formatter.format(r) for r in caplog.records)
    assert "ACL not found" in text and "consul query failed" in text
    assert token not in text


def test_blocking_query_does_not_busy_loop(fake: ConsulFake) -> None:
    fake.register(SVC, "a", address="10.0.0.1")

    async def scenario() -> None:
        async with watching(source_for(fake, wait_s=5.0), ["llama", "mistral"]) as w:
            first = {(await w.until(lambda rs: True)).model for _ in range(2)}
            assert first == {"llama", "mistral"}  # every model's current set comes first
            await asyncio.sleep(0.1)
            since = time.monotonic()
            assert await w.quiet(1.0) == []
            served = fake.served(since=since)
            assert served <= 2, f"{served} health queries in a quiet second: not blocking"
            fake.register(SVC, "b", address="10.0.0.2")  # a blocked query wakes on change
            assert ids(await w.until(lambda rs: rs.model == "llama")) == ["a", "b"]
    run(scenario())


def test_same_service_id_on_two_nodes_and_warning_weight_zero(fake: ConsulFake) -> None:
    """Consul keys instances by (node, id); ``Weights.Warning`` 0 means no traffic while
    warning (valid in Consul), never a malformed entry."""
    registry = CollectorRegistry()
    fake.register(SVC, "r", address="10.0.0.1", node="gpu-1", node_address="10.0.0.1")
    fake.register(SVC, "r", address="10.0.0.2", node="gpu-2", node_address="10.0.0.2")
    fake.register(SVC, "w", address="10.0.0.3", check_status="warning",
                  weights={"Passing": 5, "Warning": 0})

    async def scenario() -> None:
        async with watching(source_for(fake, registry, allow_warning=True), ["llama"]) as w:
            assert ids(await w.until(lambda rs: True)) == ["r@gpu-1", "r@gpu-2"]
            fake.set_check("w", "passing")
            got = await w.until(lambda rs: "w" in ids(rs))
            assert {r.id: r.weight for r in got.replicas}["w"] == 5
    run(scenario())
    assert registry.get_sample_value("caravan_discovery_skipped_entries_total",
                                     {"model": "llama", "reason": "bad_weight"}) is None
