"""``ConsulReplicaSource``: replicas of each model from Consul's health API.

Three datacenter-wide blocking queries (``caravan.discovery.consul_watch``: the checks, the
service instances and the nodes of the catalog) tell which models may have changed; those
models' ``GET /v1/health/service/<prefix><model>`` is then read without blocking, one
model at a time. So the process holds four HTTP connections to the agent whatever the
model count (one shared pool, ``caravan.discovery.consul_http``). Each query runs in its
own daemon thread so the event loop never blocks (not ``asyncio.to_thread``: its threads
are joined at exit, and a blocked query may last ``wait_s``).

Contract (see ``ReplicaSource``): for each model, the first usable answer yields its
current ``ReplicaSet``; later yields happen only when the published set changes. A query
that fails -- Consul unreachable, leaderless, rate limiting, an ACL problem, a
configuration error (``caravan.discovery.consul_outcome`` has the classification, taken
from Consul's source) -- never changes what was published: the consumer keeps the last
good set. An answer filtered by ACLs, or empty under a deny policy with no token, is such
a failure, never "no replicas". A failed read of a model, or a failed watch (which leaves
every model's view stale), increments ``caravan_discovery_errors_total{model}`` and
``caravan_discovery_failures_total{model,kind}`` of the models concerned;
``caravan_discovery_up{model}`` is 0 until the next successful read of the model; one
WARNING line per model names the kind, Consul's text and the fix when the
kind changes (repeats are DEBUG), and one INFO line reports the recovery. ``problems()``
lists the models in trouble for ``/readyz``.

Retry delays depend on the kind (``RetryPolicy``): about a second at most while Consul is
unreachable or leaderless, so a change made once it is back reaches Envoy within a second
whatever the outage lasted. A watch keeps its last index across errors (Consul's
blocking-query rules only reset it when it goes backwards) and its first query after an
error waits at most ``probe_wait_s``; a watch that answers again after failing, or whose
index went backwards, has every model re-read. Each watch and each model's reads are rate
limited by a token bucket (``query_rate_per_s``, ``query_burst``), as Consul's
blocking-query guide asks.

Token swaps: when ``consul.token_file`` (or ``CONSUL_HTTP_TOKEN_FILE``) is set, its content
is re-read every ``token_poll_s``; a new token aborts the queries in flight (Consul wakes
no blocked query on an ACL change), and every watch and model read runs again at once with
it. A token file that cannot be read keeps the current token (logged once).

An update that empties a model's set is held for ``empty_confirm_s`` (``EmptyGuard``; the
model is read again when the hold ends), counted in
``caravan_discovery_empty_updates_held_total{model}`` and logged. Malformed entries never
reach the output (``caravan.discovery.consul_entries``;
``caravan_discovery_skipped_entries_total{model,reason}``, logged once per (instance,
reason)). The ACL token is sent in ``X-Consul-Token`` and never logged. Reads ask for every
entry (no ``?passing``), since a passing-only read would hide maintenance mode.
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
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from caravan.discovery.blocking import next_index
from caravan.discovery.consul_http import HealthAnswer, HealthClient, PyConsulHealth
from caravan.discovery.consul_models import DiscoveryMetrics, ModelState, Reporter, WatchState
from caravan.discovery.consul_outcome import (
    Failure,
    RetryPolicy,
    classify_answer,
    classify_exception,
)
from caravan.discovery.consul_settings import ConsulSettings, resolve_consul_settings
from caravan.discovery.consul_watch import check_fingerprints, watch_specs
from caravan.discovery.types import ReplicaSet
from caravan.spec import ConsulSpec
from caravan.token_file import TokenFileError, read_token_file

__all__ = ["ConsulReplicaSource", "DiscoveryMetrics", "HealthAnswer", "HealthClient"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class ConsulReplicaSource:
    """``ReplicaSource`` over Consul. One ``updates`` consumer per instance;
    cancel the consuming task to stop (queries in flight are aborted or abandoned)."""

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
        token_poll_s: float = 0.25,
    ) -> None:
        self._settings = settings
        self._token = settings.token
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
        self._token_poll_s = token_poll_s
        self._report = Reporter(DiscoveryMetrics(registry), clock, settings.empty_confirm_s)
        self._report.secrets.update(t for t in (settings.token,) if t)
        self._states: dict[str, ModelState] = {}
        self._watches: list[WatchState] = []
        self._generation = 0  # bumped by a token swap: answers of older queries are dropped
        self._checks_seq = 0  # checks-watch answers handled so far
        self._last_checks: Any = None  # the last checks-watch body
        self._work = asyncio.Event()  # set when a model becomes due for a read
        self._kick = asyncio.Event()  # set (then replaced) by a token swap

    @classmethod
    def from_spec(
        cls, spec: ConsulSpec, registry: CollectorRegistry,
        env: Mapping[str, str] | None = None, **kwargs: Any,
    ) -> ConsulReplicaSource:
        """Resolve settings from ``spec`` and ``env`` (default ``os.environ``).
        Raises ``ConsulConfigError`` naming a bad field or variable."""
        settings = resolve_consul_settings(spec, os.environ if env is None else env)
        return cls(settings, registry, **kwargs)

    async def updates(self, models: Sequence[str]) -> AsyncIterator[ReplicaSet]:
        specs = watch_specs([self._settings.service_name(m) for m in models])
        client = (self._factory(self._settings) if self._factory is not None
                  else PyConsulHealth(self._settings, pool_size=len(specs) + 1))
        out: asyncio.Queue[ReplicaSet] = asyncio.Queue()
        self._work, self._kick = asyncio.Event(), asyncio.Event()
        for m in models:
            self._states[m] = self._report.add_model(m, self._settings.service_name(m),
                                                     self._rate)
        self._watches = [WatchState(spec, self._rate) for spec in specs]
        self._log_start(models)
        tasks = [asyncio.create_task(self._reader(client, out), name="consul-reader")]
        tasks += [asyncio.create_task(self._watch(w, client), name=f"consul-watch-{w.spec.name}")
                  for w in self._watches]
        if self._settings.token_file:
            tasks.append(asyncio.create_task(self._token_watch(client, self._settings.token_file),
                                             name="consul-token-file"))
        try:
            while True:
                yield await out.get()
        finally:
            for t in tasks:
                t.cancel()
            client.abort()
            await asyncio.gather(*tasks, return_exceptions=True)

    def problems(self) -> dict[str, str]:
        """Model -> what is wrong with its discovery now (empty when all is well)."""
        return self._report.problems(self._states.values())

    def _log_start(self, models: Sequence[str]) -> None:
        s = self._settings
        log.info("watching consul services", extra={
            "models": list(models), "watches": [w.spec.path for w in self._watches],
            "consul": s.base_url, "wait_s": s.wait_s, "acl_token": self._token is not None,
            "token_file": s.token_file})

    # ------------------------------------------------------------------ the watches

    async def _watch(self, w: WatchState, client: HealthClient) -> None:
        """One datacenter-wide blocking query loop; runs until cancelled."""
        while True:
            await self._pace(w.bucket.take(self._clock()))
            gen = self._generation
            try:
                answer = await _in_thread(client.watch, w.spec, w.index, self._watch_wait(w))
            except Exception as exc:
                if gen == self._generation:
                    await self._nap(self._on_watch_failure(w, classify_exception(exc)))
                continue
            if gen != self._generation:
                continue  # asked with the old token
            failure = classify_answer(answer, f"{self._settings.service_prefix}*",
                                      self._token is not None)
            if failure is not None:
                await self._nap(self._on_watch_failure(w, failure))
                continue
            self._on_watch_answer(w, answer)
            if w.index == 0:  # the next query won't block: don't spin
                await self._nap(self._requery_delay_s)

    def _watch_wait(self, w: WatchState) -> float:
        wait = self._settings.wait_s
        return min(wait, self._probe_wait_s) if w.failure is not None else wait

    def _on_watch_failure(self, w: WatchState, failure: Failure) -> float:
        """Every model's view is stale: count it for each; returns the retry delay."""
        w.failures += 1
        w.failure = failure
        for st in self._states.values():
            self._report.failed(st, failure, f"watch {w.spec.path}")
        return self._retry.delay(failure.kind, w.failures, self._rng)

    def _on_watch_answer(self, w: WatchState, answer: HealthAnswer) -> None:
        recovered = w.failure is not None
        w.failures, w.failure = 0, None
        if recovered:  # Consul is back: the other failing watches probe now, not later
            self._kick_all()
        previous = w.index
        w.index = next_index(previous, answer.index)
        moved = previous == 0 or w.index != previous
        if recovered or (moved and not w.spec.per_model):
            self._mark_all()
        elif w.spec.per_model:
            self._on_checks(answer.body)

    def _on_checks(self, body: Any) -> None:
        """Mark the models whose checks (or their nodes' checks) changed."""
        self._checks_seq += 1
        self._last_checks = body
        fps = check_fingerprints(body, {st.service: st.nodes for st in self._states.values()})
        for st in self._states.values():
            fp = None if fps is None else fps.get(st.service)
            if fp is None or fp != st.check_fp:
                self._schedule(st, 0.0)
            st.check_fp = fp

    def _baseline(self, st: ModelState, seq: int) -> str | None:
        """The digest to compare the next checks answer with, once a read changed the
        model's nodes: the last checks answer's, if that answer came before the read was
        sent (the read saw at least its state); else None (the next answer re-reads)."""
        if seq != self._checks_seq:
            return None
        fps = check_fingerprints(self._last_checks, {st.service: st.nodes})
        return None if fps is None else fps.get(st.service)

    # ------------------------------------------------------------------ the reader

    async def _reader(self, client: HealthClient, out: asyncio.Queue[ReplicaSet]) -> None:
        """Reads the models that are due, one at a time; runs until cancelled."""
        while True:
            self._work.clear()
            due = [st for st in self._states.values() if st.due is not None]
            if not due:
                await self._work.wait()
                continue
            st = min(due, key=lambda s: s.due or 0.0)
            wait = (st.due or 0.0) - self._clock()
            if wait > 0:
                await self._first(self._sleep(wait), self._work.wait())
                continue
            st.due = None
            await self._pace(st.bucket.take(self._clock()))
            await self._read(st, client, out)

    async def _read(self, st: ModelState, client: HealthClient,
                    out: asyncio.Queue[ReplicaSet]) -> None:
        gen, seq = self._generation, self._checks_seq
        try:
            answer = await _in_thread(client.service_health, st.service)
        except Exception as exc:
            if gen == self._generation:
                self._on_failure(st, classify_exception(exc))
            else:
                self._schedule(st, 0.0)
            return
        if gen != self._generation:
            self._schedule(st, 0.0)
            return
        failure = classify_answer(answer, st.service, self._token is not None)
        if failure is not None:
            self._on_failure(st, failure)
            return
        nodes = st.nodes
        published = self._report.answered(st, answer, self._settings.allow_warning)
        if st.nodes != nodes:  # the checks that concern the model changed
            st.check_fp = self._baseline(st, seq)
        if published is not None:
            out.put_nowait(published)
        deadline = st.guard.deadline()
        if deadline is not None:  # read again when the hold ends
            self._schedule(st, max(0.05, deadline - self._clock() + 0.01))

    def _on_failure(self, st: ModelState, failure: Failure) -> None:
        self._report.failed(st, failure, "read")
        st.failures += 1
        self._schedule(st, self._retry.delay(failure.kind, st.failures, self._rng))

    def _schedule(self, st: ModelState, delay: float) -> None:
        at = self._clock() + delay
        st.due = at if st.due is None else min(st.due, at)
        self._work.set()

    def _mark_all(self) -> None:
        for st in self._states.values():
            self._schedule(st, 0.0)

    # ------------------------------------------------------------------ token swaps

    async def _token_watch(self, client: HealthClient, path: str) -> None:
        """Re-reads the token file every ``token_poll_s``; swaps the token when it changed."""
        unreadable = False
        while True:
            await self._sleep(self._token_poll_s)
            try:
                token = read_token_file(path, "consul.token_file")
            except TokenFileError as exc:
                if not unreadable:
                    log.warning("consul token file unreadable; keeping the current token",
                                extra={"error": str(exc)})
                unreadable = True
                continue
            unreadable = False
            if token != self._token:
                self._swap_token(client, token)

    def _swap_token(self, client: HealthClient, token: str) -> None:
        """Abort every query in flight and run them all again with ``token`` at once."""
        self._token = token
        self._report.secrets.add(token)
        self._generation += 1
        client.set_token(token)
        client.abort()
        self._kick_all()
        self._mark_all()
        log.info("consul token file changed; queries restarted with the new token",
                 extra={"token_file": self._settings.token_file})

    # ------------------------------------------------------------------ helpers

    def _kick_all(self) -> None:
        """End every watch's retry sleep now."""
        kick, self._kick = self._kick, asyncio.Event()
        kick.set()

    async def _pace(self, delay: float) -> None:
        if delay > 0:
            await self._sleep(delay)

    async def _nap(self, delay: float) -> None:
        """Sleep ``delay``, cut short by a token swap."""
        await self._first(self._sleep(delay), self._kick.wait())

    @staticmethod
    async def _first(*aws: Awaitable[Any]) -> None:
        """Wait until the first of ``aws`` completes; cancel the others."""
        tasks = [asyncio.ensure_future(a) for a in aws]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()


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
