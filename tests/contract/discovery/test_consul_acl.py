"""ACL problems never look like "no replicas" (issue 14, deliver 1), against the Consul fake
(ACL filtering as in Consul's ``aclFilter.filterCheckServiceNodes`` and
``maskResultsFilteredByACLs``), through py-consul's HTTP client over real TCP.

A filtered answer, an empty answer under a deny policy without a token, and a 403 are
discovery failures: the last good set stays, ``caravan_discovery_failures_total{kind}``
counts them, ``caravan_discovery_up`` is 0, one WARNING line names the model, the kind and
the fix, and ``problems()`` (``/readyz``) shows it. An update that empties a model's set is
held for ``empty_confirm_s``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from tests.fakes.consul import ConsulFake

from caravan.discovery.consul import ConsulReplicaSource
from caravan.discovery.consul_acl import control_plane_policy
from caravan.discovery.consul_settings import ConsulSettings
from caravan.discovery.types import ReplicaSet

SVC = "triton-llama"
TOKEN = "5e1b2c3d-0000-4000-8000-00000000c0de"
FULL = control_plane_policy("triton-")
NO_NODE_READ = 'service_prefix "triton-" { policy = "read" }'
NO_SERVICE_READ = 'node_prefix "" { policy = "read" }'


@pytest.fixture
def fake() -> Iterator[ConsulFake]:
    with ConsulFake(acl_default_policy="deny") as f:
        f.set_token(TOKEN, FULL)
        f.register(SVC, "a", address="10.0.0.1", node="gpu-1", node_address="10.0.0.1")
        f.register(SVC, "b", address="10.0.0.2", node="gpu-2", node_address="10.0.0.2")
        yield f


class Run:
    """A source consuming ``updates(["llama"])`` in a task, with its metrics."""

    def __init__(self, source: ConsulReplicaSource, registry: CollectorRegistry) -> None:
        self.source, self.registry = source, registry
        self.sets: list[ReplicaSet] = []

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, {"model": "llama", **labels}) or 0.0

    async def wait_for(self, pred: Any, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met; sets={self.sets}")
            await asyncio.sleep(0.02)

    def ids(self) -> list[list[str]]:
        return [[r.id for r in rs.replicas] for rs in self.sets]


@asynccontextmanager
async def running(fake: ConsulFake, token: str | None = TOKEN, **kw: Any) -> AsyncIterator[Run]:
    registry = CollectorRegistry()
    settings = ConsulSettings(host="127.0.0.1", port=fake.port, wait_s=kw.pop("wait_s", 1.0),
                              timeout_s=2.0, token=token,
                              empty_confirm_s=kw.pop("empty_confirm_s", 10.0))
    source = ConsulReplicaSource(settings, registry, rng=random.Random(2),
                                 backoff_initial_s=0.05, slow_max_s=0.2, **kw)
    run = Run(source, registry)

    async def pump() -> None:
        async for rs in source.updates(["llama"]):
            run.sets.append(rs)

    task = asyncio.create_task(pump())
    try:
        yield run
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def go(coro: Any) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


def test_the_documented_policy_reads_every_replica(fake: ConsulFake) -> None:
    async def scenario() -> None:
        async with running(fake) as run:
            await run.wait_for(lambda: run.ids() == [["a", "b"]])
            assert run.metric("caravan_discovery_up") == 1
            assert run.source.problems() == {}
    go(scenario())
    assert {r.token for r in fake.requests} == {TOKEN}


@pytest.mark.parametrize("policy", [NO_NODE_READ, NO_SERVICE_READ],
                         ids=["token-without-node-read", "token-without-service-read"])
def test_token_swap_keeps_the_set_and_is_an_acl_error(
    fake: ConsulFake, policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Consul answers 200 with the entries filtered out; the flag says so (token sent)."""
    async def scenario() -> None:
        async with running(fake) as run:
            await run.wait_for(lambda: run.ids() == [["a", "b"]])
            fake.set_token(TOKEN, policy)  # seen at the next evaluation (wait_s = 1 s)
            await run.wait_for(lambda: run.metric("caravan_discovery_failures_total",
                                                  kind="acl_filtered") >= 3)
            assert run.ids() == [["a", "b"]], "the last good set must stand"
            assert run.metric("caravan_discovery_up") == 0
            problem = run.source.problems()["llama"]
            assert problem.startswith("acl_filtered") and "node:read" in problem
            fake.set_token(TOKEN, FULL)  # the policy is fixed: recovered within seconds
            await run.wait_for(lambda: run.metric("caravan_discovery_up") == 1)
            assert run.ids() == [["a", "b"]] and run.source.problems() == {}
    with caplog.at_level(logging.INFO, logger="caravan.discovery.consul"):
        go(scenario())
    failed = [r for r in caplog.records if r.getMessage().startswith("consul query failed")
              and r.levelno == logging.WARNING]
    assert len(failed) == 1, "one WARNING line per kind change, not one per query"
    assert failed[0].kind == "acl_filtered" and "node:read" in failed[0].fix  # type: ignore[attr-defined]
    assert any(r.getMessage() == "consul answering again" for r in caplog.records)


def test_no_token_under_deny_never_publishes_an_empty_set(fake: ConsulFake) -> None:
    """The anonymous token reads nothing and Consul hides the filtered flag from it."""
    async def scenario() -> None:
        async with running(fake, token=None) as run:
            await run.wait_for(lambda: run.metric("caravan_discovery_failures_total",
                                                  kind="acl_empty") >= 2)
            assert run.sets == [] and "consul.token_file" in run.source.problems()["llama"]
    go(scenario())


def test_unknown_token_is_acl_denied(fake: ConsulFake) -> None:
    async def scenario() -> None:
        async with running(fake) as run:
            await run.wait_for(lambda: run.ids() == [["a", "b"]])
            fake.delete_token(TOKEN)
            fake.register(SVC, "c", address="10.0.0.3", node="gpu-1")  # wakes the query
            await run.wait_for(lambda: run.metric("caravan_discovery_failures_total",
                                                  kind="acl_denied") >= 1)
            assert run.ids() == [["a", "b"]]
            assert "ACL not found" in run.source.problems()["llama"]
    go(scenario())


def test_an_emptying_update_is_held_for_the_confirmation_time(fake: ConsulFake) -> None:
    async def scenario() -> None:
        async with running(fake, empty_confirm_s=1.5) as run:
            await run.wait_for(lambda: run.ids() == [["a", "b"]])
            t0 = time.monotonic()
            fake.deregister("a", node="gpu-1")
            fake.deregister("b", node="gpu-2")
            await run.wait_for(lambda: run.metric(
                "caravan_discovery_empty_updates_held_total") == 1)
            assert "emptied" in run.source.problems()["llama"]
            await run.wait_for(lambda: run.ids()[-1] == [], timeout=5)
            held = time.monotonic() - t0
            assert 1.4 <= held <= 3.0, held
            assert run.metric("caravan_discovery_up") == 1, "an empty set is not an error"
    go(scenario())


def test_a_set_that_refills_within_the_confirmation_time_never_goes_empty(
    fake: ConsulFake,
) -> None:
    async def scenario() -> None:
        async with running(fake, empty_confirm_s=3.0) as run:
            await run.wait_for(lambda: run.ids() == [["a", "b"]])
            fake.set_check("a", "critical", node="gpu-1")  # e.g. an agent restarting its checks
            fake.set_check("b", "critical", node="gpu-2")
            await run.wait_for(lambda: run.metric(
                "caravan_discovery_empty_updates_held_total") == 1)
            fake.set_check("a", "passing", node="gpu-1")
            await run.wait_for(lambda: run.source.problems() == {})
            await asyncio.sleep(0.3)
            assert [] not in run.ids() and run.ids()[-1] == ["a"]
    go(scenario())
