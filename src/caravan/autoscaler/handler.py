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

On its first tick a handler resumes the cooldown of the target's last scaling event
(``last_scaled_at``; Nomad keeps it), so a restarted autoscaler does not act at once.
Starting replicas count as capacity: strategies see ``running + starting``, and a
scale-up never re-asks for a count the target already has placed. A stepping
strategy (``ScalingStrategy.steps_from_count``: target-value, threshold delta/percentage,
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
from caravan.autoscaler.ports import (
    MetricsSource,
    NotReadyError,
    ScaleError,
    ScaleTarget,
    TargetStatus,
)
from caravan.autoscaler.strategies import Direction, Proposal, combine
from caravan.spec.autoscaling import ScalingPolicy, policy_for

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
    "capacity",
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
    "capacity",
    "error",
)
Clock = Callable[[], float]


@dataclass(frozen=True)
class ScalingDecision:
    """One evaluation of one policy. ``at`` is clock seconds; ``current`` the capacity
    (running + starting); ``desired`` what the checks want after clamping/stabilization;
    ``capacity_cap`` the count scale-ups are held at while capacity is exhausted."""

    model: str
    at: float
    current: int
    desired: int
    direction: Direction
    action: Action
    reason: str
    checks: tuple[CheckResult, ...] = ()
    status: TargetStatus | None = None
    capacity_cap: int | None = None


@dataclass(frozen=True)
class HandlerState:
    """Everything a handler remembers between ticks. ``capacity_cap`` holds scale-ups at
    the count the cluster could place until ``capacity_until`` (clock seconds)."""

    windows: Mapping[str, Window] = field(default_factory=dict)
    cooldown_until: float = float("-inf")
    down_since: float | None = None
    down_asks: tuple[tuple[float, int], ...] = ()
    capacity_cap: int | None = None
    capacity_until: float = float("-inf")
    capacity_reason: str = ""
    capacity_strikes: int = 0
    seeded: bool = False


MAX_BACKOFF_FACTOR = 8  # capacity holds double on each failed retry, up to 8 x the base


Outcome = tuple[ScalingDecision, HandlerState]


@dataclass(frozen=True)
class _Tick:
    """The inputs of one decision, and how to build its outcome."""

    policy: ScalingPolicy
    status: TargetStatus
    results: tuple[CheckResult, ...]
    now: float
    prop: Proposal
    cap: int | None

    def out(self, action: Action, desired: int, reason: str, st: HandlerState) -> Outcome:
        d = ScalingDecision(
            self.policy.model, self.now, self.status.capacity, desired, self.prop.direction,
            action, reason, self.results, self.status, self.cap,
        )
        return d, st


def seeded(policy: ScalingPolicy, state: HandlerState, status: TargetStatus) -> HandlerState:
    """On the first tick, resume the cooldown of the group's last scaling event, as
    nomad-autoscaler does on start (``policy/handler.go`` ``NewPolicyHandler``: the
    remaining ``cooldown_on_scale_up``, since the event's direction is unknown). Pure."""
    if state.seeded:
        return state
    last = status.last_scaled_at
    until = state.cooldown_until if last is None else max(state.cooldown_until,
                                                          last + policy.cooldown_up_s)
    return replace(state, seeded=True, cooldown_until=until)


def with_shortfall(policy: ScalingPolicy, state: HandlerState, status: TargetStatus,
                   now: float) -> HandlerState:
    """A shortfall starts a capacity hold: scale-ups stop at what was placed for
    ``capacity_backoff_s``, doubled (up to 8x) each time the retry right after a hold
    fails again. During a hold a shortfall only refreshes the cap. Pure."""
    sf = status.shortfall
    if sf is None:
        return state
    if now < state.capacity_until:
        return replace(state, capacity_cap=sf.placeable, capacity_reason=sf.reason)
    base = policy.capacity_backoff_s
    retry_failed = state.capacity_strikes > 0 and now - state.capacity_until < base
    strikes = state.capacity_strikes + 1 if retry_failed else 1
    hold = base * min(2 ** (strikes - 1), MAX_BACKOFF_FACTOR)
    return replace(state, capacity_cap=sf.placeable, capacity_until=now + hold,
                   capacity_reason=sf.reason, capacity_strikes=strikes)


def decide(
    policy: ScalingPolicy,
    state: HandlerState,
    status: TargetStatus,
    results: tuple[CheckResult, ...],
    now: float,
    dry_run: bool = False,
) -> Outcome:
    """The decision for one tick and the state after it. Pure.

    Returns action "scale" when the target should be asked for ``desired``; the
    caller turns it into "scaled", "not-ready" or "error" (see ``after_scale``).
    A "capacity" decision whose status has a releasable shortfall asks the caller to
    release the stuck request (``PolicyHandler.tick``).
    """
    state = with_shortfall(policy, seeded(policy, state, status), status, now)
    capped = state.capacity_cap is not None and now < state.capacity_until
    cap = state.capacity_cap if capped else None
    prop = combine([r.vote for r in results], status.capacity, policy.min, policy.max)
    t = _Tick(policy, status, results, now, prop, cap)
    calm = replace(state, down_since=None, down_asks=())
    if not status.ready:
        return _not_ready(t, calm)
    if prop.direction == "none":
        return t.out("none", status.capacity, prop.reason, calm)
    if prop.direction == "up":
        return _up(t, calm, state, dry_run)
    return _down(t, state, dry_run)


def _not_ready(t: _Tick, calm: HandlerState) -> Outcome:
    sf, count = t.status.shortfall, t.status.capacity
    if sf is None:
        return t.out("not-ready", count, f"target not ready: {t.status.note or 'deployment active'}",
                     calm)
    then = ("giving the stuck scale-up back (its deployment is failed; Nomad reverts the count)"
            if sf.releasable else "the deployment is not the autoscaler's: Nomad fails it at "
            "its progress deadline")
    return t.out("capacity", sf.placeable, f"capacity exhausted: {sf.reason}; {then}", calm)


def _up(t: _Tick, calm: HandlerState, state: HandlerState, dry_run: bool) -> Outcome:
    prop, status = t.prop, t.status
    desired = prop.desired
    if t.cap is not None and desired > t.cap:
        desired = max(t.cap, status.capacity)
        if desired <= status.capacity or desired <= status.desired:
            left = state.capacity_until - t.now
            return t.out("capacity", desired, f"{prop.reason}; capacity exhausted "
                         f"({state.capacity_reason}): held at {t.cap} for {left:.0f} s", calm)
    if desired <= status.desired:
        return t.out("none", desired,
                     f"{prop.reason}; already asked for {status.desired}, waiting for placement",
                     calm)
    if _held_while_starting(t.policy, prop, status):
        return t.out("starting", desired, f"{prop.reason}; {status.starting} replica(s) still "
                     "starting: a stepping strategy waits until they serve", calm)
    return _act(t, desired, prop.reason, calm, dry_run)


def _down(t: _Tick, state: HandlerState, dry_run: bool) -> Outcome:
    now, keep = t.now, t.policy.scale_down_stabilization_s
    since = now if state.down_since is None else state.down_since
    asks = (*(a for a in state.down_asks if a[0] >= now - keep), (now, t.prop.desired))
    st = replace(state, down_since=since, down_asks=asks)
    held = now - since
    if held < keep:
        return t.out("stabilizing", t.prop.desired,
                     f"{t.prop.reason}; down held {held:.0f}/{keep:.0f} s", st)
    return _act(t, max(a[1] for a in asks), t.prop.reason, st, dry_run)


def _act(t: _Tick, desired: int, reason: str, st: HandlerState, dry_run: bool) -> Outcome:
    if t.now < st.cooldown_until:
        return t.out("cooldown", desired, f"{reason}; cooldown for {st.cooldown_until - t.now:.0f} s",
                     st)
    if dry_run or t.policy.dry_run:
        return t.out("dry-run", desired, f"{reason}; dry run, not scaling", st)
    return t.out("scale", desired, reason, st)


def _held_while_starting(policy: ScalingPolicy, prop: Proposal, status: TargetStatus) -> bool:
    """A scale-up won by a stepping strategy while replicas are still starting."""
    if prop.direction != "up" or status.starting <= 0 or not policy.hold_steps_while_starting:
        return False
    check = next((c for c in policy.checks if c.name == prop.check), None)
    return check is not None and check.strategy.steps_from_count


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
        elif d.action == "capacity" and act and not (self.dry_run or self.policy.dry_run):
            d = self._release(d, status)
        return self._finish(d, st)

    def _release(self, d: ScalingDecision, status: TargetStatus) -> ScalingDecision:
        """Give a releasable stuck scale-up back (its deployment blocks every scale)."""
        if status.shortfall is None or not status.shortfall.releasable or status.ready:
            return d
        try:
            self.target.release(self.policy.model, d.reason)
        except ScaleError as exc:
            return replace(d, reason=f"{d.reason}; release failed: {exc}")
        return d

    def _scale(self, d: ScalingDecision) -> Exception | None:
        meta = {"caravan.autoscaler": "caravan", "caravan.direction": d.direction,
                "caravan.from": str(d.current)}
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
