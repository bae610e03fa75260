"""Discovery's datacenter-wide watches (``caravan.discovery.consul_watch``) against the
Consul fake, over real TCP: the connections held do not grow with the model count, every
kind of write that changes a health answer reaches the models it concerns (and only
those are read again for a check change), and a token-file swap aborts the blocked
queries so the new token is used at once, not after ``wait_s``."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from tests.fakes.consul import ConsulFake

from caravan.discovery.consul import ConsulReplicaSource
from caravan.discovery.consul_acl import control_plane_policy
from caravan.discovery.consul_settings import ConsulSettings
from caravan.discovery.types import HealthStatus, ReplicaSet

SVC = "triton-llama"
HELD = 4  # three watches + the reader (consul_watch.WATCHES)


@pytest.fixture
def fake() -> Iterator[ConsulFake]:
    with ConsulFake() as f:
        yield f


class Run:
    def __init__(self, source: ConsulReplicaSource, registry: CollectorRegistry) -> None:
        self.source, self.registry = source, registry
        self.last: dict[str, ReplicaSet] = {}

    def metric(self, name: str, model: str = "llama", **labels: str) -> float:
        return self.registry.get_sample_value(name, {"model": model, **labels}) or 0.0

    async def wait_for(self, pred: Any, timeout: float = 5.0) -> float:
        t0 = time.monotonic()
        while not pred():
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"condition not met; last={self.last}")
            await asyncio.sleep(0.01)
        return time.monotonic() - t0


@asynccontextmanager
async def running(fake: ConsulFake, models: list[str], **kw: Any) -> AsyncIterator[Run]:
    registry = CollectorRegistry()
    settings = ConsulSettings(host="127.0.0.1", port=fake.port, wait_s=kw.pop("wait_s", 5.0),
                              timeout_s=2.0, token=kw.pop("token", None),
                              token_file=kw.pop("token_file", None),
                              empty_confirm_s=kw.pop("empty_confirm_s", 10.0))
    source = ConsulReplicaSource(settings, registry, rng=random.Random(5),
                                 backoff_initial_s=0.05, slow_max_s=0.2, **kw)
    run = Run(source, registry)

    async def pump() -> None:
        async for rs in source.updates(models):
            run.last[rs.model] = rs

    task = asyncio.create_task(pump())
    try:
        yield run
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def go(coro: Any) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


def held_with(fake: ConsulFake, n: int) -> int:
    """Connections open to the agent once ``n`` models are discovered and quiet."""
    models = [f"m{i}" for i in range(n)]
    for m in models:
        fake.register(f"triton-{m}", f"{m}-0", address="10.0.0.1")
    seen: list[int] = []

    async def scenario() -> None:
        async with running(fake, models) as run:
            await run.wait_for(lambda: all(m in run.last for m in models))
            await asyncio.sleep(0.3)
            seen.append(fake.open_connections())
    go(scenario())
    for m in models:
        fake.deregister(f"{m}-0")
    return seen[0]


def test_held_connections_do_not_grow_with_the_model_count(fake: ConsulFake) -> None:
    one, twenty = held_with(fake, 1), held_with(fake, 20)
    assert one == twenty == HELD, (one, twenty)


def test_a_node_address_change_reaches_replicas_without_their_own_address(
    fake: ConsulFake,
) -> None:
    fake.register(SVC, "a", address="", node="gpu-1", node_address="10.1.1.1")

    async def scenario() -> None:
        async with running(fake, ["llama"]) as run:
            await run.wait_for(lambda: "llama" in run.last)
            fake.set_node_address("gpu-1", "10.2.2.2")  # touches neither services nor checks
            await run.wait_for(lambda: run.last["llama"].replicas[0].address == "10.2.2.2")
    go(scenario())


def test_node_checks_reach_every_model_on_the_node(fake: ConsulFake) -> None:
    fake.register(SVC, "a", address="10.0.0.1", node="gpu-1", node_address="10.0.0.1")
    fake.register("triton-mistral", "m", address="10.0.0.1", node="gpu-1")
    fake.register(SVC, "b", address="10.0.0.2", node="gpu-2", node_address="10.0.0.2")

    def ids(run: Run, model: str) -> list[str]:
        return [r.id for r in run.last[model].serving] if model in run.last else []

    async def scenario() -> None:
        async with running(fake, ["llama", "mistral"], empty_confirm_s=0) as run:
            await run.wait_for(lambda: ids(run, "llama") == ["a", "b"])
            fake.node_check("gpu-1", "critical")
            await run.wait_for(lambda: ids(run, "llama") == ["b"] and not ids(run, "mistral"))
            fake.node_check("gpu-1", "passing")
            fake.node_maintenance(True, "kernel upgrade", node="gpu-1")
            await run.wait_for(lambda: {r.id: r.health for r in run.last["llama"].replicas}
                               == {"a": HealthStatus.DRAINING, "b": HealthStatus.HEALTHY})
    go(scenario())


def test_other_services_checks_do_not_make_models_be_read_again(fake: ConsulFake) -> None:
    fake.register(SVC, "a", address="10.0.0.1")
    fake.register(SVC, "a2", address="10.0.0.2")
    fake.register("billing", "bill", address="10.0.0.9")

    async def scenario() -> None:
        async with running(fake, ["llama"]) as run:
            await run.wait_for(lambda: "llama" in run.last)
            fake.set_check("bill", "warning")  # the first checks answer after the model's
            await asyncio.sleep(0.3)  # nodes are known has it read once more: let it pass
            since = time.monotonic()
            for i in range(10):  # a busy datacenter: a check flapping elsewhere
                fake.set_check("bill", "critical" if i % 2 == 0 else "passing")
                await asyncio.sleep(0.02)
            fake.set_check("a", "warning")  # ...and one change of ours
            await run.wait_for(lambda: [r.id for r in run.last["llama"].replicas] == ["a2"])
            assert fake.served(f"/v1/health/service/{SVC}", since=since) == 1
    go(scenario())


TOKEN_A = "00000000-0000-4000-8000-00000000000a"
TOKEN_B = "00000000-0000-4000-8000-00000000000b"


def test_a_token_file_swap_is_used_at_once_not_after_the_wait(tmp_path: Path) -> None:
    """Consul wakes no blocked query on an ACL change: the swap itself must end them."""
    token_file = tmp_path / "consul.token"
    token_file.write_text(TOKEN_A + "\n")
    with ConsulFake(acl_default_policy="deny") as f:
        f.set_token(TOKEN_A, control_plane_policy("triton-"))
        f.set_token(TOKEN_B, 'service_prefix "triton-" { policy = "read" }')  # no node:read
        f.register(SVC, "a", address="10.0.0.1")

        async def scenario() -> None:
            async with running(f, ["llama"], wait_s=30.0, token=TOKEN_A,
                               token_file=str(token_file)) as run:
                await run.wait_for(lambda: run.metric("caravan_discovery_up") == 1)
                await asyncio.sleep(0.3)  # every query now blocks for 30 s
                token_file.write_text(TOKEN_B + "\n")
                took = await run.wait_for(lambda: run.metric(
                    "caravan_discovery_failures_total", kind="acl_filtered") >= 1)
                assert took < 3.0, f"the swap was noticed after {took:.1f} s"
                assert [r.id for r in run.last["llama"].replicas] == ["a"]
                token_file.write_text(TOKEN_A + "\n")
                await run.wait_for(lambda: run.metric("caravan_discovery_up") == 1, 3.0)
                await asyncio.sleep(0.3)
                assert f.open_connections() <= HELD, "aborted queries left connections"
        go(scenario())
        sent = {r.token for r in f.requests}
    assert sent == {TOKEN_A, TOKEN_B}
