"""Every kind of Consul outage is recovered from within a second of Consul's return
(issue 14, deliver 2), against the Consul fake's failure modes (from Consul's source:
see ``tests/fakes/consul/``), through py-consul's HTTP client over real TCP.

Leader loss (agent up, 500 "No cluster leader" after the agent's hold, or "No known Consul
servers" at once) and a stopped agent are retried within about a second and keep the last
index; 429 (go-connlimit) slows down but keeps probing; TLS and proxy errors are
configuration errors, logged once with the fix. One connection pool serves every model.
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
from caravan.discovery.consul_http import PyConsulHealth
from caravan.discovery.consul_settings import ConsulSettings
from caravan.discovery.types import ReplicaSet

SVC = "triton-llama"
WATCHES = ("/v1/health/state/any", "/v1/catalog/services", "/v1/catalog/nodes")


@pytest.fixture
def fake() -> Iterator[ConsulFake]:
    with ConsulFake() as f:
        f.register(SVC, "a", address="10.0.0.1")
        yield f


class Run:
    def __init__(self, source: ConsulReplicaSource, registry: CollectorRegistry) -> None:
        self.source, self.registry = source, registry
        self.sets: list[ReplicaSet] = []

    def metric(self, name: str, model: str = "llama", **labels: str) -> float:
        return self.registry.get_sample_value(name, {"model": model, **labels}) or 0.0

    def ids(self, model: str = "llama") -> list[str] | None:
        sets = [rs for rs in self.sets if rs.model == model]
        return [r.id for r in sets[-1].replicas] if sets else None

    async def wait_for(self, pred: Any, timeout: float = 5.0) -> float:
        """Seconds until ``pred()``; TimeoutError after ``timeout``."""
        t0 = time.monotonic()
        while not pred():
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"condition not met; last sets={self.sets[-3:]}")
            await asyncio.sleep(0.01)
        return time.monotonic() - t0


@asynccontextmanager
async def running(fake: ConsulFake, models: tuple[str, ...] = ("llama",), scheme: str = "http",
                  **kw: Any) -> AsyncIterator[Run]:
    registry = CollectorRegistry()
    settings = ConsulSettings(host="127.0.0.1", port=fake.port, scheme=scheme,
                              wait_s=kw.pop("wait_s", 5.0), timeout_s=2.0, verify=False)
    source = ConsulReplicaSource(settings, registry, rng=random.Random(4), **kw)
    run = Run(source, registry)

    async def pump() -> None:
        async for rs in source.updates(list(models)):
            run.sets.append(rs)

    task = asyncio.create_task(pump())
    try:
        yield run
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def go(coro: Any) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


@pytest.mark.parametrize("mode", ["no_leader_held", "no_leader", "no_servers", "agent_down"])
def test_a_change_after_any_outage_is_seen_within_a_second(fake: ConsulFake, mode: str) -> None:
    """3 s outage while a blocking query waits; the last set stands; once Consul is back,
    a replica registered at once is seen within about a second (agent hold included)."""
    async def scenario() -> None:
        async with running(fake) as run:
            await run.wait_for(lambda: run.ids() == ["a"])
            await asyncio.sleep(0.2)  # the loop now blocks on the index
            start_outage(fake, mode)
            await asyncio.sleep(3.0)
            assert run.ids() == ["a"] and run.metric("caravan_discovery_up") == 0
            kind = "unreachable" if mode == "agent_down" else "leaderless"
            failed = run.metric("caravan_discovery_failures_total", kind=kind)
            assert failed >= (1 if mode == "no_leader_held" else 3), failed
            end_outage(fake, mode)
            fake.register(SVC, "b", address="10.0.0.2")
            took = await run.wait_for(lambda: run.ids() == ["a", "b"], timeout=5)
            assert took <= 1.2, f"{mode}: the change took {took:.2f} s after Consul's return"
            assert "llama" not in run.source.problems()
    go(scenario())
    for watch in WATCHES:
        after = [r.query.get("index", ["0"])[0] for r in fake.requests if r.path == watch]
        assert after.count("0") == 1, f"{watch}: the index is kept across the outage"


def start_outage(fake: ConsulFake, mode: str) -> None:
    if mode == "no_leader_held":
        fake.lose_leader(hold_s=2.0)  # the agent holds each query (Consul: 7 s)
    elif mode == "no_leader":
        fake.lose_leader()
    elif mode == "no_servers":
        fake.lose_servers()
    else:
        fake.stop()


def end_outage(fake: ConsulFake, mode: str) -> None:
    if mode == "agent_down":
        fake.start()
    else:
        fake.regain_leader()


def test_leaderless_retries_stay_within_a_second(fake: ConsulFake) -> None:
    delays: list[float] = []

    async def sleep(s: float) -> None:
        delays.append(s)
        await asyncio.sleep(s)

    async def scenario() -> None:
        async with running(fake, sleep=sleep, query_burst=10_000) as run:
            await run.wait_for(lambda: run.ids() == ["a"])
            fake.lose_servers()
            await run.wait_for(lambda: len(delays) >= 8, timeout=15)
            fake.regain_leader()
    go(scenario())
    # a model read's retry sleeps what is left of its delay (>= 0.25 s) when it is due
    assert all(0.24 <= d <= 1.0 for d in delays), delays


def test_too_many_connections_slows_down_but_recovers(fake: ConsulFake) -> None:
    """Two models, room for one connection: the other gets go-connlimit's raw 429."""
    fake.register("triton-mistral", "m", address="10.0.0.9")
    fake.max_conns_per_client = 1

    async def scenario() -> None:
        async with running(fake, models=("llama", "mistral"), slow_max_s=1.0) as run:
            await run.wait_for(lambda: sum(run.metric("caravan_discovery_failures_total", m,
                                                      kind="rate_limited")
                                           for m in ("llama", "mistral")) >= 2)
            fake.max_conns_per_client = 200
            await run.wait_for(lambda: run.ids() == ["a"] and run.ids("mistral") == ["m"],
                               timeout=5)
    go(scenario())


def test_one_connection_pool_for_every_model(fake: ConsulFake) -> None:
    """Eight models: at most one connection per model (each blocking query holds one),
    and an outage does not leave more behind."""
    models = tuple(f"m{i}" for i in range(8))
    for m in models:
        fake.register(f"triton-{m}", f"{m}-0", address="10.0.0.1")

    async def scenario() -> None:
        async with running(fake, models=models) as run:
            await run.wait_for(lambda: all(run.ids(m) for m in models))
            await asyncio.sleep(0.3)
            before = fake.open_connections()
            fake.restart()
            await asyncio.sleep(1.5)
            await run.wait_for(lambda: all(run.metric("caravan_discovery_up", m) == 1
                                           for m in models))
            await asyncio.sleep(0.3)
            assert before <= len(models) and fake.open_connections() <= len(models)
    go(scenario())


def test_tls_error_is_a_config_error_logged_once_with_the_fix(
    fake: ConsulFake, caplog: pytest.LogCaptureFixture
) -> None:
    """https against a plain-HTTP agent: SSLError on every query."""
    async def scenario() -> None:
        async with running(fake, scheme="https", backoff_initial_s=0.05,
                           backoff_max_s=0.2) as run:
            await run.wait_for(lambda: run.metric("caravan_discovery_failures_total",
                                                  kind="config") >= 4)
            assert run.sets == [] and "ca_file" in run.source.problems()["llama"]
    with caplog.at_level(logging.DEBUG, logger="caravan.discovery.consul"):
        go(scenario())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "consul.ca_file" in warnings[0].fix  # type: ignore[attr-defined]


def test_proxy_error_is_a_config_error(fake: ConsulFake, monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy from the environment that refuses: requests' ProxyError."""
    from caravan.local.process import free_port

    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("no_proxy", raising=False)

    async def scenario() -> None:
        async with running(fake, backoff_initial_s=0.05, backoff_max_s=0.2) as run:
            await run.wait_for(lambda: run.metric("caravan_discovery_failures_total",
                                                  kind="config") >= 2)
            assert "NO_PROXY" in run.source.problems()["llama"]
    go(scenario())


def test_an_ipv6_consul_address_builds_a_valid_url() -> None:
    client = PyConsulHealth(ConsulSettings(host="::1", port=8500))
    assert client._client.http.base_uri == "http://[::1]:8500"
    import requests

    prepared = requests.Request("GET", client._client.http.uri("/v1/health/service/x")).prepare()
    assert prepared.url == "http://[::1]:8500/v1/health/service/x"
