"""Per-model bookkeeping of Consul discovery: its state, metrics, log lines and the
``/readyz`` text. Used by ``caravan.discovery.consul`` only (single event loop: not
thread-safe).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from caravan.discovery.blocking import TokenBucket
from caravan.discovery.consul_entries import Skipped, parse_entries
from caravan.discovery.consul_http import HealthAnswer
from caravan.discovery.consul_outcome import Failure
from caravan.discovery.consul_watch import WatchSpec, entry_nodes
from caravan.discovery.guard import EmptyGuard, GuardEvent
from caravan.discovery.types import ReplicaSet

log = logging.getLogger("caravan.discovery.consul")


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
class ModelState:
    """One model: its guard, read pacing, failure, the nodes its instances are on, the
    digest of its checks in the last checks-watch answer and when to read it next
    (``due``, None: nothing to do)."""

    model: str
    service: str
    guard: EmptyGuard
    bucket: TokenBucket
    failures: int = 0
    failure: Failure | None = None
    failing_since: float = 0.0
    held_since: float = 0.0
    malformed: set[tuple[str, str]] = field(default_factory=set)
    nodes: frozenset[str] = frozenset()
    check_fp: str | None = None
    due: float | None = 0.0


@dataclass
class WatchState:
    """One datacenter-wide blocking query: its index (kept across errors) and failure."""

    spec: WatchSpec
    rate: tuple[float, int]
    index: int = 0
    failures: int = 0
    failure: Failure | None = None
    bucket: TokenBucket = field(init=False)

    def __post_init__(self) -> None:
        self.bucket = TokenBucket(*self.rate)


class Reporter:
    """Turns outcomes into model states, metrics and log lines; owns the redaction of
    every token seen (``secrets``)."""

    def __init__(self, metrics: DiscoveryMetrics, clock: Callable[[], float],
                 empty_confirm_s: float) -> None:
        self.metrics = metrics
        self.clock = clock
        self.empty_confirm_s = empty_confirm_s
        self.secrets: set[str] = set()

    def add_model(self, model: str, service: str, rate: tuple[float, int]) -> ModelState:
        self.metrics.errors.labels(model=model)  # export 0 before the first error
        self.metrics.up.labels(model=model).set(0)
        return ModelState(model, service, EmptyGuard(self.empty_confirm_s), TokenBucket(*rate))

    def failed(self, st: ModelState, failure: Failure, query: str) -> None:
        """Count and (once per kind) log a failed query concerning ``st``."""
        self.metrics.errors.labels(model=st.model).inc()
        self.metrics.failures.labels(model=st.model, kind=failure.kind.value).inc()
        self.metrics.up.labels(model=st.model).set(0)
        changed = st.failure is None or st.failure.kind is not failure.kind
        if st.failure is None:
            st.failing_since = self.clock()
        st.failure = failure
        log.log(logging.WARNING if changed else logging.DEBUG,
                "consul query failed; keeping the last replica set", extra={
                    "model": st.model, "service": st.service, "query": query,
                    "kind": failure.kind.value, "error": self.redact(failure.detail),
                    "fix": failure.fix})

    def answered(self, st: ModelState, answer: HealthAnswer,
                 allow_warning: bool) -> ReplicaSet | None:
        """A usable read of ``st`` (its failure, if any, ends): returns the set to publish,
        if any."""
        self._recovered(st)
        result = parse_entries(answer.body, st.model, st.service, allow_warning)
        st.malformed = self._account(st.model, result.skipped, st.malformed)
        st.nodes = entry_nodes(answer.body)
        publish, event = st.guard.offer(ReplicaSet(st.model, result.replicas), self.clock())
        self._on_guard(st, event)
        return publish

    def problems(self, states: Iterable[ModelState]) -> dict[str, str]:
        now = self.clock()
        out: dict[str, str] = {}
        for st in states:
            if st.failure is not None:
                fix = f"; fix: {st.failure.fix}" if st.failure.fix else ""
                out[st.model] = (f"{st.failure.kind.value} for {now - st.failing_since:.1f} s, "
                                 f"keeping the last replica set: "
                                 f"{self.redact(st.failure.detail)}{fix}")
            elif st.guard.deadline() is not None:
                out[st.model] = (f"an update emptied the replica set "
                                 f"{now - st.held_since:.1f} s ago; holding the last set up "
                                 f"to {st.guard.confirm_s:g} s")
        return out

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "<redacted>")
        return text

    def _recovered(self, st: ModelState) -> None:
        if st.failure is not None:
            log.info("consul answering again", extra={
                "model": st.model, "kind": st.failure.kind.value, "failed_queries": st.failures,
                "outage_s": round(self.clock() - st.failing_since, 3)})
        st.failures, st.failure = 0, None
        self.metrics.up.labels(model=st.model).set(1)

    def _on_guard(self, st: ModelState, event: GuardEvent) -> None:
        last = st.guard.published
        kept = len(last.replicas) if last is not None else 0
        if event is GuardEvent.HELD:
            st.held_since = self.clock()
            self.metrics.held.labels(model=st.model).inc()
            log.warning("consul update emptied the replica set; holding the last one", extra={
                "model": st.model, "kept_replicas": kept, "confirm_s": st.guard.confirm_s})
        elif event is GuardEvent.CONFIRMED:
            log.warning("replica set empty for the confirmation time; publishing it", extra={
                "model": st.model, "confirm_s": st.guard.confirm_s})
        elif event is GuardEvent.RECOVERED:
            log.info("replica set non-empty again; hold ended", extra={
                "model": st.model, "replicas": kept,
                "held_s": round(self.clock() - st.held_since, 3)})

    def _account(self, model: str, skipped: Sequence[Skipped],
                 before: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """Count and log entries that became malformed since the last response."""
        now = {(sk.service_id, sk.reason) for sk in skipped}
        for sk in skipped:
            if (sk.service_id, sk.reason) in before:
                continue
            self.metrics.skipped.labels(model=model, reason=sk.reason).inc()
            log.warning("consul entry skipped", extra={
                "model": model, "service_id": sk.service_id, "reason": sk.reason,
                "detail": self.redact(sk.detail),
            })
        return now
