"""``ConsulReplicaSource``: replicas of each model from Consul's health API.

One blocking query loop per model on ``GET /v1/health/service/<prefix><model>``
(py-consul ``health.service(name, index=, wait=)``), each query run in its own
daemon thread so the event loop never blocks. Not ``asyncio.to_thread``: the
default executor has ~cpu+4 workers (one blocking query per model would starve
it) and its threads are joined at exit (shutdown would hang up to ``wait_s``).

Contract (see ``ReplicaSource``): for each model, the first successful query
yields its current ``ReplicaSet``; later yields happen only when the set
changed. While Consul is unreachable or failing, nothing new is yielded (the
consumer keeps the last good set), ``caravan_discovery_errors_total{model}`` is
incremented and the query is retried after an exponential backoff with full
jitter (seeded ``random.Random`` injected): up to ``backoff_max_s`` (30 s) after
HTTP-level failures (Consul answering with errors must not be hammered), but only
up to ``reconnect_max_s`` (0.5 s) while Consul cannot be reached at all (a refused
connection costs Consul nothing), so a replica change made once Consul is back
reaches Envoy within about a second, whatever the outage lasted. Malformed entries never reach the
output: see ``caravan.discovery.consul_entries`` for the mapping rules, and
``caravan_discovery_skipped_entries_total{model,reason}``, incremented (and
logged) once each time a (service id, reason) starts being malformed.

The ACL token is sent in the ``X-Consul-Token`` header and never logged.
Queries ask for every entry (no ``?passing``), since a passing-only query would
hide maintenance mode; health filtering is done by ``parse_entries``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter

from caravan.discovery.blocking import backoff_delay, format_wait, next_index
from caravan.discovery.consul_entries import Skipped, parse_entries
from caravan.discovery.consul_settings import ConsulSettings, resolve_settings
from caravan.discovery.types import ReplicaSet
from caravan.spec import ConsulSpec

log = logging.getLogger(__name__)
T = TypeVar("T")


class HealthClient(Protocol):
    """The one Consul call discovery needs. Blocking; one caller thread at a time.

    Returns ``(raw X-Consul-Index header, decoded JSON body)``. ``index`` 0 means a
    non-blocking query; otherwise Consul holds the reply until the service
    changes past ``index`` or ``wait_s`` (seconds) elapses. Raises the builtin
    ``ConnectionError`` when Consul cannot be reached (refused, reset, connect
    timeout), any other exception on HTTP, read-timeout or decoding errors.
    """

    def service_health(self, service: str, index: int, wait_s: float) -> tuple[object, Any]: ...


class PyConsulHealth:
    """``HealthClient`` over py-consul's std (requests) client.

    HTTP timeout: py-consul >= 1.8 ``connections_timeout`` (verified in its
    ``consul/std.py``) bounds connect and read; for blocking queries it adds
    ``wait + wait/16`` (Consul's jitter), so a silently dropped connection fails
    after ``wait_s * 17/16 + timeout_s`` instead of hanging forever.
    """

    def __init__(self, settings: ConsulSettings) -> None:
        import consul

        self._client = consul.Consul(
            host=settings.host, port=settings.port, token=settings.token, scheme=settings.scheme,
            dc=settings.datacenter, verify=settings.verify, connections_timeout=settings.timeout_s,
        )
        # py-consul lets $CONSUL_HTTP_TOKEN override the token passed in; ours is resolved already.
        self._client.token = settings.token

    def service_health(self, service: str, index: int, wait_s: float) -> tuple[object, Any]:
        import requests

        try:
            if index > 0:
                wait = format_wait(wait_s)
                raw, body = self._client.health.service(service, index=str(index), wait=wait)
            else:
                raw, body = self._client.health.service(service)
        except requests.exceptions.ConnectionError as exc:
            raise ConsulUnreachable(str(exc)) from exc
        return raw, body


class ConsulUnreachable(ConnectionError):
    """No connection to Consul at all (refused, reset, connect timeout)."""


class DiscoveryMetrics:
    """Discovery counters, registered in the injected registry (once per registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.skipped = Counter(
            "caravan_discovery_skipped_entries_total",
            "Consul entries skipped as malformed, counted when a (service id, reason) appears",
            ["model", "reason"], registry=registry,
        )
        self.errors = Counter(
            "caravan_discovery_errors_total", "failed Consul health queries", ["model"],
            registry=registry,
        )


class ConsulReplicaSource:
    """``ReplicaSource`` over Consul. One ``updates`` consumer per instance;
    cancel the consuming task to stop (in-flight queries are abandoned)."""

    def __init__(
        self,
        settings: ConsulSettings,
        registry: CollectorRegistry,
        *,
        rng: random.Random | None = None,
        client_factory: Callable[[ConsulSettings], HealthClient] = PyConsulHealth,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        reconnect_max_s: float = 0.5,
        requery_delay_s: float = 0.05,
    ) -> None:
        self._settings = settings
        self._metrics = DiscoveryMetrics(registry)
        self._rng = rng or random.Random()
        self._factory = client_factory
        self._sleep = sleep
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._reconnect_max_s = reconnect_max_s
        self._requery_delay_s = requery_delay_s

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
        queue: asyncio.Queue[ReplicaSet] = asyncio.Queue()
        tasks = [asyncio.create_task(self._watch(m, queue), name=f"consul-{m}") for m in models]
        try:
            while True:
                yield await queue.get()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch(self, model: str, out: asyncio.Queue[ReplicaSet]) -> None:
        """One model's blocking-query loop; runs until cancelled."""
        s = self._settings
        service = s.service_name(model)
        client = self._factory(s)
        index, failures, last = 0, 0, None
        malformed: set[tuple[str, str]] = set()
        self._metrics.errors.labels(model=model)  # export 0 before the first error
        log.info("watching consul service", extra={
            "model": model, "service": service, "consul": s.base_url, "wait_s": s.wait_s,
            "acl_token": s.token is not None,
        })
        while True:
            try:
                raw, body = await _in_thread(client.service_health, service, index, s.wait_s)
            except Exception as exc:
                failures += 1
                index = 0  # Consul may come back with a lower index: restart the loop
                await self._sleep(self._on_error(model, service, exc, failures))
                continue
            if failures:
                log.info("consul reachable again",
                         extra={"model": model, "failed_queries": failures})
            failures = 0
            result = parse_entries(body, model, service, s.allow_warning)
            malformed = self._account(model, result.skipped, malformed)
            current = ReplicaSet(model, result.replicas)
            if current != last:
                out.put_nowait(current)
                last = current
            index = next_index(index, raw)
            if index == 0:  # next query won't block: don't spin
                await self._sleep(self._requery_delay_s)

    def _on_error(self, model: str, service: str, exc: Exception, failures: int) -> float:
        self._metrics.errors.labels(model=model).inc()
        initial_s, max_s = self._backoff
        if isinstance(exc, ConnectionError):  # nobody listening: probing is free
            max_s = min(max_s, self._reconnect_max_s)
            initial_s = min(initial_s, max_s)
        delay = backoff_delay(failures, initial_s, max_s, self._rng)
        log.warning("consul query failed; keeping the last replica set", extra={
            "model": model, "service": service, "error_type": type(exc).__name__,
            "error": self._redact(str(exc)), "attempt": failures, "retry_in_s": round(delay, 3),
        })
        return delay

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
