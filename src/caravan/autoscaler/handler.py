"""The per-policy state machine and the ``Autoscaler`` that runs every policy.

One ``PolicyHandler`` per model. Each tick (every ``evaluation_interval_s``)::

      tick ──► status(target) ──error──────────────────────────────► ERROR
                  │
                  ▼
               checks: query ► window ► strategy ► vote   (always run, for metrics)
                  │
                  ▼ status not ready (active deployment) ──────────► NOT-READY
               combine votes; clamp to [min, max]
                  │ same count ────────────────────────────────────► NONE
                  │ up, but not above what was already asked ───────► NONE (waiting for placement)
                  │ up by a stepping strategy while replicas start ─► STARTING
                  │ down, not yet held for the stabilization window ► STABILIZING
                  │ inside the cooldown of the last action ─────────► COOLDOWN
                  │ dry_run ────────────────────────────────────────► DRY-RUN
                  ▼
               scale(target) ──refused for now──────────────────────► NOT-READY
                  │ ──failed───────────────────────────────────────► ERROR
                  ▼
               SCALED: cooldown until now + cooldown_{up,down}_s; stabilization reset

Starting replicas count as capacity: strategies see ``running + starting``, and a
scale-up never re-asks for a count the target already has placed. A stepping
strategy (``strategies.steps_from_count``: target-value, threshold delta/percentage,
latency-slo) reads a signal that starting replicas cannot improve yet, so its
scale-ups wait (STARTING) until they serve (``hold_steps_while_starting``).

A scale-down acts only after every decision during ``scale_down_stabilization_s``
was "down"; it then goes to the largest count asked in that window (the safest).
Any other outcome (up, none, error, not ready) restarts the window.

State is a frozen ``HandlerState`` replaced on every tick; handlers share nothing,
so policies never affect each other. ``decide`` is pure; ``PolicyHandler.tick`` does
the I/O (status, queries, scale) through the injected ports, with time from the
injected clock (seconds). A handler is not thread-safe: one tick at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from caravan.autoscaler.checks import CheckResult, Window, run_checks
from caravan.autoscaler.policy import ScalingPolicy, policy_for
from caravan.autoscaler.ports import (
    MetricsSource,
    NotReadyError,
    ScaleError,
    ScaleTarget,
    TargetStatus,
)
from caravan.autoscaler.strategies import Direction, Proposal, combine, steps_from_count

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from caravan.autoscaler.metrics import AutoscalerMetrics
    from caravan.spec import PlatformSpec

log = logging.getLogger(__name__)

Action = Literal[
    "scale",
    "scaled",
    "dry-run",
    "none",
    "starting",
    "cooldown",
    "stabilizing",
    "not-ready",
    "error",
]
ACTIONS: tuple[Action, ...] = (
    "scaled",
    "dry-run",
    "none",
    "starting",
    "cooldown",
    "stabilizing",
    "not-ready",
    "error",
)
Clock = Callable[[], float]


@dataclass(frozen=True)
class ScalingDecision:
    """One evaluation of one policy. ``at`` is clock seconds; ``current`` the capacity
    (running + starting); ``desired`` what the checks want after clamping/stabilization."""

    model: str
    at: float
    current: int
    desired: int
    direction: Direction
    action: Action
    reason: str
    checks: tuple[CheckResult, ...] = ()
    status: TargetStatus | None = None


@dataclass(frozen=True)
class HandlerState:
    """Everything a handler remembers between ticks."""

    windows: Mapping[str, Window] = field(default_factory=dict)
    cooldown_until: float = float("-inf")
    down_since: float | None = None
    down_asks: tuple[tuple[float, int], ...] = ()


def decide(
    policy: ScalingPolicy,
    state: HandlerState,
    status: TargetStatus,
    results: tuple[CheckResult, ...],
    now: float,
    dry_run: bool = False,
) -> tuple[ScalingDecision, HandlerState]:
    """The decision for one tick and the state after it. Pure.

    Returns action "scale" when the target should be asked for ``desired``; the
    caller turns it into "scaled", "not-ready" or "error" (see ``after_scale``).
    """
    count = status.capacity
    prop = combine([r.vote for r in results], count, policy.min, policy.max)

    def out(
        action: Action, desired: int, reason: str, st: HandlerState
    ) -> tuple[ScalingDecision, HandlerState]:
        d = ScalingDecision(
            policy.model, now, count, desired, prop.direction, action, reason, results, status
        )
        return d, st

    calm = replace(state, down_since=None, down_asks=())
    if not status.ready:
        return out(
            "not-ready", count, f"target not ready: {status.note or 'deployment active'}", calm
        )
    if prop.direction == "none":
        return out("none", count, prop.reason, calm)
    if prop.direction == "up" and prop.desired <= status.desired:
        return out(
            "none",
            prop.desired,
            f"{prop.reason}; already asked for {status.desired}, waiting for placement",
            calm,
        )
    if _held_while_starting(policy, prop, status):
        return out(
            "starting",
            prop.desired,
            f"{prop.reason}; {status.starting} replica(s) still starting: "
            "a stepping strategy waits until they serve",
            calm,
        )
    desired, st = prop.desired, calm
    if prop.direction == "down":
        since = now if state.down_since is None else state.down_since
        keep = policy.scale_down_stabilization_s
        asks = (*(a for a in state.down_asks if a[0] >= now - keep), (now, prop.desired))
        st = replace(state, down_since=since, down_asks=asks)
        held = now - since
        if held < keep:
            return out(
                "stabilizing", prop.desired, f"{prop.reason}; down held {held:.0f}/{keep:.0f} s", st
            )
        desired = max(a[1] for a in asks)
    if now < state.cooldown_until:
        return out(
            "cooldown",
            desired,
            f"{prop.reason}; cooldown for {state.cooldown_until - now:.0f} s",
            st,
        )
    if dry_run or policy.dry_run:
        return out("dry-run", desired, f"{prop.reason}; dry run, not scaling", st)
    return out("scale", desired, prop.reason, st)


def _held_while_starting(policy: ScalingPolicy, prop: Proposal, status: TargetStatus) -> bool:
    """A scale-up won by a stepping strategy while replicas are still starting."""
    if prop.direction != "up" or status.starting <= 0 or not policy.hold_steps_while_starting:
        return False
    check = next((c for c in policy.checks if c.name == prop.check), None)
    return check is not None and steps_from_count(check.strategy.name, check.strategy.params)


def after_scale(
    policy: ScalingPolicy, state: HandlerState, d: ScalingDecision, error: Exception | None
) -> tuple[ScalingDecision, HandlerState]:
    """Outcome of a scale request: SCALED starts the cooldown and resets stabilization."""
    if isinstance(error, NotReadyError):
        return replace(d, action="not-ready", reason=f"{d.reason}; target refused: {error}"), state
    if error is not None:
        return replace(d, action="error", reason=f"{d.reason}; scale failed: {error}"), state
    wait = policy.cooldown_up_s if d.direction == "up" else policy.cooldown_down_s
    return replace(d, action="scaled"), replace(
        state, cooldown_until=d.at + wait, down_since=None, down_asks=()
    )


class PolicyHandler:
    """Runs one policy against the injected ports. ``tick`` never raises for port errors."""

    def __init__(
        self,
        policy: ScalingPolicy,
        metrics: MetricsSource,
        target: ScaleTarget,
        clock: Clock = time.time,
        exporter: AutoscalerMetrics | None = None,
        dry_run: bool = False,
    ) -> None:
        self.policy = policy
        self.metrics = metrics
        self.target = target
        self.clock = clock
        self.exporter = exporter
        self.dry_run = dry_run
        self.state = HandlerState()
        self.last: ScalingDecision | None = None

    def tick(self, act: bool = True) -> ScalingDecision:
        """One evaluation. With ``act`` False nothing is scaled (``--explain``); the
        decision then stays "scale" when it would have scaled."""
        now = self.clock()
        try:
            status = self.target.status(self.policy.model)
        except ScaleError as exc:
            d = ScalingDecision(
                self.policy.model, now, 0, 0, "none", "error", f"status failed: {exc}"
            )
            return self._finish(d, self.state)
        results, windows = run_checks(
            self.metrics, self.policy, self.state.windows, status.capacity, now
        )
        d, st = decide(
            self.policy, replace(self.state, windows=windows), status, results, now, self.dry_run
        )
        if d.action == "scale" and act:
            d, st = after_scale(self.policy, st, d, self._scale(d))
        return self._finish(d, st)

    def _scale(self, d: ScalingDecision) -> Exception | None:
        meta = {"caravan.direction": d.direction, "caravan.from": str(d.current)}
        try:
            self.target.scale(self.policy.model, d.desired, f"caravan autoscaler: {d.reason}", meta)
        except ScaleError as exc:
            return exc
        return None

    def _finish(self, d: ScalingDecision, st: HandlerState) -> ScalingDecision:
        self.state, self.last = st, d
        if self.exporter is not None:
            self.exporter.record(d)
        votes = {r.vote.check: (r.vote.error or r.vote.value) for r in d.checks}
        log.info(
            "autoscaler decision",
            extra={
                "model": d.model,
                "action": d.action,
                "direction": d.direction,
                "current": d.current,
                "desired": d.desired,
                "reason": d.reason,
                "checks": str(votes),
            },
        )
        return d


class Autoscaler:
    """Evaluates every policy on its own interval until stopped. Safe to run in any event loop."""

    def __init__(self, handlers: list[PolicyHandler]) -> None:
        self.handlers = tuple(handlers)

    def once(self, act: bool = False) -> list[ScalingDecision]:
        """Evaluate every policy once (blocking). ``act`` False: decide, don't scale."""
        return [h.tick(act=act) for h in self.handlers]

    async def run(self, stop: asyncio.Event) -> None:
        """Tick each policy every ``evaluation_interval_s`` (in a worker thread) until ``stop``."""
        await asyncio.gather(*(self._loop(h, stop) for h in self.handlers))

    async def _loop(self, h: PolicyHandler, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(h.tick)
            except Exception:  # a bug in one policy must not stop the others
                log.exception("autoscaler tick failed", extra={"model": h.policy.model})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=h.policy.evaluation_interval_s)


def build_autoscaler(
    spec: PlatformSpec,
    metrics: MetricsSource,
    target: ScaleTarget,
    registry: CollectorRegistry | None = None,
    clock: Clock = time.time,
    dry_run: bool = False,
    models: list[str] | None = None,
) -> Autoscaler:
    """An ``Autoscaler`` for every model of ``spec`` that has an enabled ``autoscaling`` section.

    ``registry``: where decisions are exported (None: not exported). ``models``: limit
    to these names. ``dry_run`` forces every policy to decide without scaling.
    """
    from caravan.autoscaler.metrics import AutoscalerMetrics

    exporter = AutoscalerMetrics(registry) if registry is not None else None
    handlers = []
    for m in spec.models:
        policy = policy_for(m)
        if policy is None or not policy.enabled or (models is not None and m.name not in models):
            continue
        handlers.append(PolicyHandler(policy, metrics, target, clock, exporter, dry_run))
    return Autoscaler(handlers)
