"""Retry delays of ``ConsulReplicaSource`` by failure kind: while Consul cannot be
reached at all (``ConnectionError``) retries stay within ``reconnect_max_s``, so a
change made once it is back is seen within about a second, however long the outage;
HTTP-level failures keep the full exponential backoff. Driven through the
``client_factory`` and ``sleep`` seams (no network, no real sleeping)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from caravan.discovery.consul import ConsulReplicaSource
from caravan.discovery.consul_settings import ConsulSettings

FAILURES = 12


class FailingHealth:
    """A HealthClient that fails ``FAILURES`` times with ``exc``, then answers."""

    def __init__(self, exc: Exception) -> None:
        self.exc, self.calls = exc, 0

    def service_health(self, service: str, index: int, wait_s: float) -> tuple[object, Any]:
        self.calls += 1
        if self.calls <= FAILURES:
            raise self.exc
        return "7", []


def delays_for(exc: Exception) -> list[float]:
    delays: list[float] = []
    client = FailingHealth(exc)

    async def sleep(s: float) -> None:
        delays.append(s)
        await asyncio.sleep(0)

    async def scenario() -> None:
        src = ConsulReplicaSource(ConsulSettings(), CollectorRegistry(), rng=random.Random(3),
                                  client_factory=lambda _s: client, sleep=sleep)
        gen = src.updates(["llama"])
        await asyncio.wait_for(gen.__anext__(), 5)
        await gen.aclose()

    asyncio.run(scenario())
    return delays[:FAILURES]


CASES = [
    ("refused connection: capped at reconnect_max_s", ConnectionRefusedError("refused"), 0.5),
    ("reset connection: capped at reconnect_max_s", ConnectionResetError("reset"), 0.5),
    ("HTTP 500: full exponential backoff", RuntimeError("500 No cluster leader"), 30.0),
]


@pytest.mark.parametrize(("exc", "cap"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_retry_delay_cap_depends_on_failure_kind(exc: Exception, cap: float) -> None:
    delays = delays_for(exc)
    assert len(delays) == FAILURES
    assert all(0.25 <= d <= cap for d in delays), delays
    if cap > 1:  # exponential growth really happens for HTTP-level failures
        assert max(delays) > 1.0, delays
