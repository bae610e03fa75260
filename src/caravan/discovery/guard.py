"""``EmptyGuard``: a model's replica set never drops from some replicas to none on a
single update. Pure; the caller passes the clock's reading.

An update that empties a non-empty set is held: the last non-empty set stays published
until updates have said "empty" for ``confirm_s`` seconds (then the empty set is
published), or until a non-empty set arrives (then it is published and the hold ends).
Envoy's panic threshold cannot do this: once EDS removes every host there is nothing
left to route to, and a momentary empty answer (an agent restarting its checks as
critical, a broken policy edit) would answer 503 for every request of the model.
``confirm_s`` 0 disables the guard. A set whose replicas are all DRAINING is not empty.
"""

from __future__ import annotations

import enum

from caravan.discovery.types import ReplicaSet


class GuardEvent(enum.Enum):
    """What ``offer`` did with an update."""

    PASS = "pass"  # published as is (or unchanged)
    HELD = "held"  # an emptying update, held; the last non-empty set stays
    WAITING = "waiting"  # still empty, still within confirm_s
    CONFIRMED = "confirmed"  # empty for confirm_s: the empty set is published
    RECOVERED = "recovered"  # non-empty again while held


class EmptyGuard:
    """One model's guard. ``published`` is the set the consumer has."""

    def __init__(self, confirm_s: float) -> None:
        if confirm_s < 0:
            raise ValueError(f"confirm_s must be >= 0, got {confirm_s}")
        self.confirm_s = confirm_s
        self.published: ReplicaSet | None = None
        self._empty_since: float | None = None

    def deadline(self) -> float | None:
        """When a held emptying update becomes publishable, or None when nothing is held."""
        return None if self._empty_since is None else self._empty_since + self.confirm_s

    def offer(self, current: ReplicaSet, now: float) -> tuple[ReplicaSet | None, GuardEvent]:
        """-> (the set to publish, or None to publish nothing; what happened)."""
        last = self.published
        if current.replicas or self.confirm_s == 0 or last is None or not last.replicas:
            event = GuardEvent.RECOVERED if self._empty_since is not None else GuardEvent.PASS
            self._empty_since = None
            return self._publish(current), event
        if self._empty_since is None:
            self._empty_since = now
            return None, GuardEvent.HELD
        if now - self._empty_since < self.confirm_s:
            return None, GuardEvent.WAITING
        self._empty_since = None
        return self._publish(current), GuardEvent.CONFIRMED

    def _publish(self, current: ReplicaSet) -> ReplicaSet | None:
        if current == self.published:
            return None
        self.published = current
        return current
