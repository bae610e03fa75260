"""How ``ConsulReplicaSource`` reacts to each kind of failure: the classification
(``caravan.discovery.consul_outcome``, from Consul's source), the retry delay caps, the
kept index, the probe wait after an error and the query pacing. Driven through the
``client_factory``, ``sleep`` and ``clock`` seams: no network, no real sleeping. The loop
under test is one datacenter-wide watch (``/v1/catalog/services``); the kept index, the
probe wait and the pacing are the same for every watch."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
from collections.abc import Callable
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry

from caravan.discovery.consul import ConsulReplicaSource
from caravan.discovery.consul_http import HealthAnswer
from caravan.discovery.consul_outcome import Kind, RetryPolicy, classify_answer, classify_exception
from caravan.discovery.consul_settings import ConsulSettings
from caravan.discovery.consul_watch import SERVICES, WatchSpec

SVC = "triton-llama"
ENTRY = {"Node": {"Node": "n1", "Address": "10.0.0.1"},
         "Service": {"ID": "a", "Service": SVC, "Port": 8001}, "Checks": []}


def answer(status: int = 200, body: Any = None, **headers: str) -> HealthAnswer:
    hdrs = {"X-Consul-Index": "7", **{k.replace("_", "-"): v for k, v in headers.items()}}
    text = json.dumps([] if body is None else body) if status < 300 else str(body)
    return HealthAnswer.from_http(status, requests.structures.CaseInsensitiveDict(hdrs), text)


ANSWERS = [
    ("200 list: usable", answer(body=[ENTRY]), False, None),
    ("200 empty, ACLs off (allow): usable", answer(X_Consul_Default_ACL_Policy="allow"), False,
     None),
    ("200 empty, deny, token sent: trusted (Consul shows filtering to tokens)",
     answer(X_Consul_Default_ACL_Policy="deny"), True, None),
    ("200 empty, deny, no token: acl_empty", answer(X_Consul_Default_ACL_Policy="deny"), False,
     Kind.ACL_EMPTY),
    ("200 filtered by ACLs: acl_filtered",
     answer(body=[ENTRY], X_Consul_Results_Filtered_By_ACLs="true"), True, Kind.ACL_FILTERED),
    ("200 not JSON: server", HealthAnswer.from_http(200, {}, "<html>"), False, Kind.SERVER),
    ("403 ACL not found: acl_denied", answer(403, "ACL not found"), True, Kind.ACL_DENIED),
    ("403 Permission denied: acl_denied", answer(403, "Permission denied"), True,
     Kind.ACL_DENIED),
    ("429 too many connections: rate_limited",
     answer(429, "Your IP is issuing too many concurrent connections"), False,
     Kind.RATE_LIMITED),
    ("500 No cluster leader: leaderless", answer(500, "No cluster leader"), False,
     Kind.LEADERLESS),
    ("500 No known Consul servers: leaderless", answer(500, "No known Consul servers"), False,
     Kind.LEADERLESS),
    ("500 wrapped rpc error: leaderless",
     answer(500, "rpc error making call: No cluster leader"), False, Kind.LEADERLESS),
    ("503 with KnownLeader false: leaderless", answer(503, "x", X_Consul_KnownLeader="false"),
     False, Kind.LEADERLESS),
    ("500 No path to datacenter: config", answer(500, "No path to datacenter"), False,
     Kind.CONFIG),
    ("500 other: server", answer(500, "rpc error making call: EOF"), False, Kind.SERVER),
    ("400 Invalid wait time: config", answer(400, "Invalid wait time"), False, Kind.CONFIG),
]


@pytest.mark.parametrize(("ans", "token_sent", "kind"), [c[1:] for c in ANSWERS],
                         ids=[c[0] for c in ANSWERS])
def test_classify_answer(ans: HealthAnswer, token_sent: bool, kind: Kind | None) -> None:
    failure = classify_answer(ans, SVC, token_sent)
    assert (failure.kind if failure else None) is kind
    if kind is not None and (kind.is_acl or kind is Kind.CONFIG):
        assert failure is not None and failure.fix, "an operator problem must say the fix"


EXCEPTIONS = [
    ("refused", ConnectionRefusedError("refused"), Kind.UNREACHABLE),
    ("reset", ConnectionResetError("reset"), Kind.UNREACHABLE),
    ("requests connection error", requests.ConnectionError("Max retries"), Kind.UNREACHABLE),
    ("connect timeout", requests.ConnectTimeout("connect"), Kind.UNREACHABLE),
    ("read timeout", requests.ReadTimeout("read"), Kind.TIMEOUT),
    ("TLS", requests.exceptions.SSLError("CERTIFICATE_VERIFY_FAILED"), Kind.CONFIG),
    ("proxy", requests.exceptions.ProxyError("407"), Kind.CONFIG),
    ("bad URL", requests.exceptions.InvalidURL("Invalid URL"), Kind.CONFIG),
    ("missing schema", requests.exceptions.MissingSchema("No scheme"), Kind.CONFIG),
    ("anything else", RuntimeError("boom"), Kind.SERVER),
]


@pytest.mark.parametrize(("exc", "kind"), [c[1:] for c in EXCEPTIONS],
                         ids=[c[0] for c in EXCEPTIONS])
def test_classify_exception(exc: Exception, kind: Kind) -> None:
    failure = classify_exception(exc)
    assert failure.kind is kind
    assert (kind is Kind.CONFIG) == bool(failure.fix)


CAPS = [(Kind.UNREACHABLE, 0.5), (Kind.TIMEOUT, 0.5), (Kind.LEADERLESS, 1.0),
        (Kind.RATE_LIMITED, 5.0), (Kind.ACL_FILTERED, 5.0), (Kind.SERVER, 5.0),
        (Kind.CONFIG, 30.0)]


@pytest.mark.parametrize(("kind", "cap"), CAPS, ids=[k.value for k, _ in CAPS])
def test_retry_policy_caps(kind: Kind, cap: float) -> None:
    rng = random.Random(5)
    delays = [RetryPolicy().delay(kind, n, rng) for n in range(1, 40)]
    assert all(0.25 <= d <= cap for d in delays), delays
    assert max(delays) > cap * 0.6, "the cap is reached, not just bounded"


# ------------------------------------------------------------------- the loop, no network


class Script:
    """A HealthClient whose ``services`` watch plays ``steps`` (an answer or an exception
    each) and records the (index, wait) and clock reading of every call; after the script it
    answers the last step forever. The other watches answer at once the first time, then
    block in their thread until ``abort``; every model read answers one replica."""

    def __init__(self, steps: list[HealthAnswer | Exception]) -> None:
        self.steps, self.calls = steps, []  # type: ignore[var-annotated]
        self.at: list[float] = []
        self.reads: list[int] = []  # len(calls) at each model read
        self.clock: Callable[[], float] = lambda: 0.0
        self._idle = threading.Event()

    def watch(self, spec: WatchSpec, index: int, wait_s: float) -> HealthAnswer:
        if spec.name != SERVICES:
            if index:
                self._idle.wait(10)
            return answer(body=[], X_Consul_Index="5")
        step = self.steps[min(len(self.calls), len(self.steps) - 1)]
        self.calls.append((index, wait_s))
        self.at.append(self.clock())
        if isinstance(step, Exception):
            raise step
        return step

    def service_health(self, service: str) -> HealthAnswer:
        self.reads.append(len(self.calls))
        return answer(body=[ENTRY])

    def set_token(self, token: str | None) -> None:
        pass

    def abort(self) -> None:
        self._idle.set()


def run_source(client: Script, until: Callable[[Script], bool], **kw: Any
               ) -> tuple[list[float], CollectorRegistry]:
    """Run the source on ``client`` until ``until(client)``; -> (sleep delays, metrics)."""
    delays: list[float] = []
    registry = CollectorRegistry()
    now = [0.0]
    client.clock = lambda: now[0]

    async def sleep(s: float) -> None:
        delays.append(s)
        now[0] += s
        await asyncio.sleep(0)

    async def scenario() -> None:
        src = ConsulReplicaSource(ConsulSettings(wait_s=30), registry, rng=random.Random(3),
                                  client_factory=lambda _s: client, sleep=sleep,
                                  clock=lambda: now[0], **kw)
        gen = src.updates(["llama"])
        task = asyncio.ensure_future(gen.__anext__())
        for _ in range(2000):
            if until(client):
                break
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)  # let the loop handle the answers in flight
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await task
        await gen.aclose()

    asyncio.run(scenario())
    return delays, registry


def test_index_kept_across_errors_and_first_query_after_is_a_short_probe() -> None:
    ok = answer(body=[ENTRY])
    leaderless = answer(500, "No cluster leader")
    client = Script([ok, leaderless, leaderless, ConnectionRefusedError("x"), ok, ok])
    run_source(client, lambda c: len(c.calls) >= 6)
    indexes = [i for i, _ in client.calls]
    waits = [w for _, w in client.calls]
    assert indexes[:6] == [0, 7, 7, 7, 7, 7], "the last index survives the outage"
    assert waits[2:5] == [1.0, 1.0, 1.0], "after an error the wait is the probe wait"
    assert waits[5] == 30, "after a good answer the wait is the spec's again"


def test_leader_loss_retries_within_a_second_forever() -> None:
    client = Script([answer(500, "No cluster leader")])
    delays, registry = run_source(client, lambda c: len(c.calls) >= 60, query_burst=10_000)
    assert delays and all(0.25 <= d <= 1.0 for d in delays), max(delays)
    assert registry.get_sample_value("caravan_discovery_failures_total",
                                     {"model": "llama", "kind": "leaderless"}) >= 59
    assert registry.get_sample_value("caravan_discovery_up", {"model": "llama"}) == 0


def test_rate_limited_slows_down_but_keeps_probing() -> None:
    client = Script([answer(429, "too many")] * 30 + [answer(body=[ENTRY])])
    delays, registry = run_source(  # the watch answers again: the model is read again
        client, lambda c: bool(c.reads) and c.reads[-1] >= 31, query_burst=10_000)
    assert max(delays) > 2.0 and all(d <= 5.0 for d in delays), delays
    assert registry.get_sample_value("caravan_discovery_up", {"model": "llama"}) == 1


def test_queries_are_paced_by_a_token_bucket() -> None:
    """An index that changes on every answer must not make a busy loop: after the burst,
    at most ``query_rate_per_s`` queries a second."""
    answers = [answer(body=[ENTRY], X_Consul_Index=str(10 + i)) for i in range(40)]
    client = Script(answers)  # type: ignore[arg-type]
    run_source(client, lambda c: len(c.calls) >= 40, query_rate_per_s=4.0, query_burst=5)
    gaps = [b - a for a, b in zip(client.at[5:], client.at[6:], strict=False)]
    assert len(gaps) >= 30 and all(g >= 0.25 - 0.01 for g in gaps), gaps[:10]
