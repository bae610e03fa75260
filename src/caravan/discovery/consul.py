"""``ConsulReplicaSource``: replicas of each model from Consul's health API.

One blocking-query loop per model on ``GET /v1/health/service/<prefix><model>``, each
query run in its own daemon thread so the event loop never blocks (not
``asyncio.to_thread``: the default executor has ~cpu+4 workers, one blocking query per
model would starve it, and its threads are joined at exit). Every model shares one
HTTP client and connection pool (``caravan.discovery.consul_http``).

Contract (see ``ReplicaSource``): for each model, the first usable answer yields its
current ``ReplicaSet``; later yields happen only when the published set changes. A query
that fails -- Consul unreachable, leaderless, rate limiting, an ACL problem, a
configuration error (``caravan.discovery.consul_outcome`` has the classification, taken
from Consul's source) -- never changes what was published: the consumer keeps the last
good set. An answer filtered by ACLs, or empty under a deny policy with no token, is such
a failure, never "no replicas". Each failed query increments
``caravan_discovery_errors_total{model}`` and ``caravan_discovery_failures_total{model,
kind}``; ``caravan_discovery_up{model}`` is 0 until the next usable answer; one WARNING
line per model names the kind, Consul's text and the fix when the kind changes (repeats
are DEBUG), and one INFO line reports the recovery. ``problems()`` lists the models in
trouble for ``/readyz``.

Retry delays depend on the kind (``RetryPolicy``): about a second at most while Consul is
unreachable or leaderless, so a change made once it is back reaches Envoy within a second
whatever the outage lasted. The last index is kept across errors (Consul's blocking-query
rules only reset it when it goes backwards); the first query after an error waits at most
``probe_wait_s``, so recovery is confirmed quickly even when nothing changed. Queries of a
model are rate limited by a token bucket (``query_rate_per_s``, ``query_burst``), as
Consul's blocking-query guide asks.

An update that empties a model's set is held for ``empty_confirm_s`` (``EmptyGuard``),
counted in ``caravan_discovery_empty_updates_held_total{model}`` and logged. Malformed
entries never reach the output (``caravan.discovery.consul_entries``;
``caravan_discovery_skipped_entries_total{model,reason}``, logged once per (instance,
reason)). The ACL token is sent in ``X-Consul-Token`` and never logged. Queries ask for
every entry (no ``?passing``), since a passing-only query would hide maintenance mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from caravan.discovery.blocking import TokenBucket, next_index
from caravan.discovery.consul_entries import Skipped, parse_entries
from caravan.discovery.consul_http import HealthAnswer, HealthClient, PyConsulHealth
from caravan.discovery.consul_outcome import (
    Failure,
    RetryPolicy,
    classify_answer,
    classify_exception,
)
from caravan.discovery.consul_settings import ConsulSettings, resolve_settings
from caravan.discovery.guard import EmptyGuard, GuardEvent
from caravan.discovery.types import ReplicaSet
from caravan.spec import ConsulSpec

__all__ = ["ConsulReplicaSource", "DiscoveryMetrics", "HealthAnswer", "HealthClient"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class DiscoveryMetrics:
    """Discovery metrics, registered in the injected registry (once per registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.skipped = Counter(
            "caravan_discovery_skipped_entries_total",
            "Consul entries skipped as malformed, counted when an (instance, reason) appears",
            ["model", "reason"], registry=registry,
        )
        self.errors = Counter(
            "caravan_discovery_errors_total", "failed Consul health queries", ["model"],
            registry=registry,
        )
        self.failures = Counter(
            "caravan_discovery_failures_total", "failed Consul health queries by kind",
            ["model", "kind"], registry=registry,
        )
        self.up = Gauge(
            "caravan_discovery_up",
            "1 when the model's last Consul query gave a usable answer, else 0",
            ["model"], registry=registry,
        )
        self.held = Counter(
            "caravan_discovery_empty_updates_held_total",
            "updates that would have emptied a model's replica set, held for confirmation",
            ["model"], registry=registry,
        )


@dataclass
class _ModelState:
    """One model's loop state (touched only by its own task)."""

    model: str
    service: str
    guard: EmptyGuard
    bucket: TokenBucket
    index: int = 0
    failures: int = 0
    failure: Failure | None = None
    failing_since: float = 0.0
    held_since: float = 0.0
    malformed: set[tuple[str, str]] = field(default_factory=set)


class ConsulReplicaSource:
    """``ReplicaSource`` over Consul. One ``updates`` consumer per instance;
    cancel the consuming task to stop (in-flight queries are abandoned)."""

    def __init__(
        self,
        settings: ConsulSettings,
        registry: CollectorRegistry,
        *,
        rng: random.Random | None = None,
        client_factory: Callable[[ConsulSettings], HealthClient] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        reconnect_max_s: float = 0.5,
        leader_max_s: float = 1.0,
        slow_max_s: float = 5.0,
        requery_delay_s: float = 0.05,
        probe_wait_s: float = 1.0,
        query_rate_per_s: float = 10.0,
        query_burst: int = 20,
    ) -> None:
        self._settings = settings
        self._metrics = DiscoveryMetrics(registry)
        self._rng = rng or random.Random()
        self._factory = client_factory
        self._sleep = sleep
        self._clock = clock
        self._retry = RetryPolicy(
            initial_s=backoff_initial_s, fast_max_s=min(reconnect_max_s, backoff_max_s),
            leader_max_s=min(leader_max_s, backoff_max_s),
            slow_max_s=min(slow_max_s, backoff_max_s), config_max_s=backoff_max_s,
        )
        self._requery_delay_s = requery_delay_s
        self._probe_wait_s = probe_wait_s
        self._rate = (query_rate_per_s, query_burst)
        self._states: dict[str, _ModelState] = {}

    @classmethod
    def from_spec(
        cls, spec: ConsulSpec, registry: CollectorRegistry,
        env: Mapping[str, str] | None = None, **kwargs: Any,
    ) -> ConsulReplicaSource:
        """Resolve settings from ``spec`` and ``env`` (default ``os.environ``).
        Raises ``ConsulConfigError`` naming a bad field or variable."""
        settings = resolve_settings(spec, os.environ if env is None else env)
        return cls(settings, registry, **kwargs)

    async def updates(self, models: Sequence[str]) -> AsyncIterator[ReplicaSet]:
        client = self._client(len(models))
        queue: asyncio.Queue[ReplicaSet] = asyncio.Queue()
        tasks = [asyncio.create_task(self._watch(m, client, queue), name=f"consul-{m}")
                 for m in models]
        try:
            while True:
                yield await queue.get()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def problems(self) -> dict[str, str]:
        """Model -> what is wrong with its discovery now (empty when all is well)."""
        now = self._clock()
        out: dict[str, str] = {}
        for model, st in self._states.items():
            if st.failure is not None:
                fix = f"; fix: {st.failure.fix}" if st.failure.fix else ""
                out[model] = (f"{st.failure.kind.value} for {now - st.failing_since:.1f} s, "
                              f"keeping the last replica set: "
                              f"{self._redact(st.failure.detail)}{fix}")
            elif st.guard.deadline() is not None:
                out[model] = (f"an update emptied the replica set {now - st.held_since:.1f} s "
                              f"ago; holding the last set up to {st.guard.confirm_s:g} s")
        return out

    def _client(self, models: int) -> HealthClient:
        if self._factory is not None:
            return self._factory(self._settings)
        return PyConsulHealth(self._settings, pool_size=models + 1)

    # ------------------------------------------------------------------ one model's loop

    async def _watch(self, model: str, client: HealthClient,
                     out: asyncio.Queue[ReplicaSet]) -> None:
        """One model's blocking-query loop; runs until cancelled."""
        s = self._settings
        st = _ModelState(model, s.service_name(model), EmptyGuard(s.empty_confirm_s),
                         TokenBucket(*self._rate))
        self._states[model] = st
        self._metrics.errors.labels(model=model)  # export 0 before the first error
        self._metrics.up.labels(model=model).set(0)
        log.info("watching consul service", extra={
            "model": model, "service": st.service, "consul": s.base_url, "wait_s": s.wait_s,
            "acl_token": s.token is not None,
        })
        while True:
            await self._pace(st)
            try:
                answer = await _in_thread(client.service_health, st.service, st.index,
                                          self._wait_s(st))
            except Exception as exc:
                await self._sleep(self._on_failure(st, classify_exception(exc)))
                continue
            failure = classify_answer(answer, st.service, s.token is not None)
            if failure is not None:
                await self._sleep(self._on_failure(st, failure))
                continue
            self._on_answer(st, answer, out)
            if st.index == 0:  # the next query won't block: don't spin
                await self._sleep(self._requery_delay_s)

    async def _pace(self, st: _ModelState) -> None:
        delay = st.bucket.take(self._clock())
        if delay > 0:
            await self._sleep(delay)

    def _wait_s(self, st: _ModelState) -> float:
        """Blocking wait: the spec's, shorter right after an error or while the guard holds."""
        wait = self._settings.wait_s
        if st.failure is not None:
            wait = min(wait, self._probe_wait_s)
        deadline = st.guard.deadline()
        if deadline is not None:
            wait = min(wait, max(0.05, deadline - self._clock() + 0.01))
        return wait

    def _on_failure(self, st: _ModelState, failure: Failure) -> float:
        """Count and (once per kind) log a failed query; returns the retry delay."""
        st.failures += 1
        self._metrics.errors.labels(model=st.model).inc()
        self._metrics.failures.labels(model=st.model, kind=failure.kind.value).inc()
        self._metrics.up.labels(model=st.model).set(0)
        delay = self._retry.delay(failure.kind, st.failures, self._rng)
        changed = st.failure is None or st.failure.kind is not failure.kind
        if st.failure is None:
            st.failing_since = self._clock()
        st.failure = failure
        log.log(logging.WARNING if changed else logging.DEBUG,
                "consul query failed; keeping the last replica set", extra={
                    "model": st.model, "service": st.service, "kind": failure.kind.value,
                    "error": self._redact(failure.detail), "fix": failure.fix,
                    "attempt": st.failures, "retry_in_s": round(delay, 3)})
        return delay

    def _on_answer(self, st: _ModelState, answer: HealthAnswer,
                   out: asyncio.Queue[ReplicaSet]) -> None:
        if st.failure is not None:
            log.info("consul answering again", extra={
                "model": st.model, "kind": st.failure.kind.value, "failed_queries": st.failures,
                "outage_s": round(self._clock() - st.failing_since, 3)})
        st.failures, st.failure = 0, None
        self._metrics.up.labels(model=st.model).set(1)
        s = self._settings
        result = parse_entries(answer.body, st.model, st.service, s.allow_warning)
        st.malformed = self._account(st.model, result.skipped, st.malformed)
        publish, event = st.guard.offer(ReplicaSet(st.model, result.replicas), self._clock())
        self._on_guard(st, event)
        if publish is not None:
            out.put_nowait(publish)
        st.index = next_index(st.index, answer.index)

    def _on_guard(self, st: _ModelState, event: GuardEvent) -> None:
        last = st.guard.published
        kept = len(last.replicas) if last is not None else 0
        if event is GuardEvent.HELD:
            st.held_since = self._clock()
            self._metrics.held.labels(model=st.model).inc()
            log.warning("consul update emptied the replica set; holding the last one", extra={
                "model": st.model, "kept_replicas": kept, "confirm_s": st.guard.confirm_s})
        elif event is GuardEvent.CONFIRMED:
            log.warning("replica set empty for the confirmation time; publishing it", extra={
                "model": st.model, "confirm_s": st.guard.confirm_s})
        elif event is GuardEvent.RECOVERED:
            log.info("replica set non-empty again; hold ended", extra={
                "model": st.model, "replicas": kept,
                "held_s": round(self._clock() - st.held_since, 3)})

    def _account(
        self, model: str, skipped: Sequence[Skipped], before: set[tuple[str, str]]
    ) -> set[tuple[str, str]]:
        """Count and log entries that became malformed since the last response."""
        now = {(sk.service_id, sk.reason) for sk in skipped}
        for sk in skipped:
            if (sk.service_id, sk.reason) in before:
                continue
            self._metrics.skipped.labels(model=model, reason=sk.reason).inc()
            log.warning("consul entry skipped", extra={
                "model": model, "service_id": sk.service_id, "reason": sk.reason,
                "detail": self._redact(sk.detail),
            })
        return now

    def _redact(self, text: str) -> str:
        token = self._settings.token
        return text.replace(token, "<redacted>") if token else text


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking ``fn(*args)`` in a fresh daemon thread; await its result.
    Cancelling the await abandons the thread (it ends when ``fn`` returns)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def deliver(result: Any, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    def run() -> None:
        try:
            result, exc = fn(*args), None
        except BaseException as e:  # handed to the awaiting task
            result, exc = None, e
        with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting
            loop.call_soon_threadsafe(deliver, result, exc)

    threading.Thread(target=run, name="consul-query", daemon=True).start()
    return await fut
