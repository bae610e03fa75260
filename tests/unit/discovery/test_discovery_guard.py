"""``EmptyGuard`` (pure): an update that empties a model's set is held for ``confirm_s``;
``TokenBucket`` (pure): the blocking loop's rate limit; ``/readyz`` shows discovery problems
without changing readiness."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from caravan.discovery.blocking import TokenBucket
from caravan.discovery.guard import EmptyGuard, GuardEvent
from caravan.discovery.types import HealthStatus, Replica, ReplicaSet
from caravan.xds.admin import route

A = Replica("a", "llama", "10.0.0.1", 8001)
B = Replica("b", "llama", "10.0.0.2", 8001)
FULL, ONE, EMPTY = ReplicaSet.of("llama", [A, B]), ReplicaSet.of("llama", [A]), ReplicaSet("llama")
DRAINING = ReplicaSet.of("llama", [Replica("a", "llama", "10.0.0.1", 8001,
                                           health=HealthStatus.DRAINING)])

# (name, confirm_s, [(offered set, at)], expected [(published set or None, event)])
CASES: list[tuple[str, float, list[tuple[ReplicaSet, float]], list[tuple[Any, GuardEvent]]]] = [
    ("first empty set is published", 5, [(EMPTY, 0)], [(EMPTY, GuardEvent.PASS)]),
    ("shrinking is not emptying", 5, [(FULL, 0), (ONE, 1)],
     [(FULL, GuardEvent.PASS), (ONE, GuardEvent.PASS)]),
    ("all draining is not empty", 5, [(FULL, 0), (DRAINING, 1)],
     [(FULL, GuardEvent.PASS), (DRAINING, GuardEvent.PASS)]),
    ("empty held, then confirmed", 5, [(FULL, 0), (EMPTY, 1), (EMPTY, 3), (EMPTY, 6)],
     [(FULL, GuardEvent.PASS), (None, GuardEvent.HELD), (None, GuardEvent.WAITING),
      (EMPTY, GuardEvent.CONFIRMED)]),
    ("refilled while held", 5, [(FULL, 0), (EMPTY, 1), (ONE, 2)],
     [(FULL, GuardEvent.PASS), (None, GuardEvent.HELD), (ONE, GuardEvent.RECOVERED)]),
    ("same set back while held: nothing to publish", 5, [(FULL, 0), (EMPTY, 1), (FULL, 2)],
     [(FULL, GuardEvent.PASS), (None, GuardEvent.HELD), (None, GuardEvent.RECOVERED)]),
    ("guard off", 0, [(FULL, 0), (EMPTY, 1)],
     [(FULL, GuardEvent.PASS), (EMPTY, GuardEvent.PASS)]),
    ("unchanged set is not republished", 5, [(FULL, 0), (FULL, 1)],
     [(FULL, GuardEvent.PASS), (None, GuardEvent.PASS)]),
]


@pytest.mark.parametrize(("confirm_s", "offers", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_empty_guard(confirm_s: float, offers: list[tuple[ReplicaSet, float]],
                     expected: list[tuple[Any, GuardEvent]]) -> None:
    guard = EmptyGuard(confirm_s)
    assert [guard.offer(rs, at) for rs, at in offers] == expected


def test_guard_deadline_tracks_the_hold() -> None:
    guard = EmptyGuard(5)
    guard.offer(FULL, 0)
    assert guard.deadline() is None
    guard.offer(EMPTY, 2)
    assert guard.deadline() == 7
    guard.offer(ONE, 3)
    assert guard.deadline() is None


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate_per_s=2, burst=3)
    assert [bucket.take(0) for _ in range(3)] == [0, 0, 0]
    assert bucket.take(0) == pytest.approx(0.5)
    assert bucket.take(10) == 0  # refilled (capped at the burst)
    with pytest.raises(ValueError):
        TokenBucket(0, 1)


class State:
    def __init__(self, ready: bool, problems: dict[str, str]) -> None:
        self._ready, self._problems = ready, problems

    def ready(self) -> bool:
        return self._ready

    def snapshot_json(self) -> dict[str, Any]:
        return {}

    def clients_json(self) -> list[dict[str, Any]]:
        return []

    def discovery_problems(self) -> dict[str, str]:
        return self._problems


READYZ = [
    ("ready, healthy discovery", True, {}, 200, "ready\n"),
    ("ready, discovery failing", True, {"llama": "acl_filtered for 3.0 s"}, 200,
     "ready\ndiscovery: llama: acl_filtered for 3.0 s\n"),
    ("not ready, discovery failing", False, {"b": "leaderless", "a": "acl_empty"}, 503,
     "not ready: no snapshot built yet\ndiscovery: a: acl_empty\ndiscovery: b: leaderless\n"),
]


@pytest.mark.parametrize(("ready", "problems", "status", "body"), [c[1:] for c in READYZ],
                         ids=[c[0] for c in READYZ])
def test_readyz_lists_discovery_problems(ready: bool, problems: dict[str, str], status: int,
                                         body: str) -> None:
    resp = route("GET", "/readyz", State(ready, problems), CollectorRegistry())
    assert (resp.status, resp.body.decode()) == (status, body)
