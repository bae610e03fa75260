"""Coalescing discovery events: a quiet window plus a maximum delay.

``Debouncer`` is pure state over times given by the caller (seconds from any
monotonic clock): after the first event of a burst, it is due once no event came
for ``quiet_s`` or, at the latest, ``max_s`` after that first event. Not
thread-safe: one owner.
"""

from __future__ import annotations


class Debouncer:
    def __init__(self, quiet_s: float, max_s: float) -> None:
        if quiet_s < 0:
            raise ValueError(f"quiet_s: must be >= 0, got {quiet_s}")
        if max_s < quiet_s:
            raise ValueError(f"max_s: must be >= quiet_s ({quiet_s}), got {max_s}")
        self.quiet_s = quiet_s
        self.max_s = max_s
        self._first: float | None = None
        self._last: float | None = None

    @classmethod
    def from_ms(cls, quiet_ms: float, max_ms: float) -> Debouncer:
        return cls(quiet_ms / 1000.0, max_ms / 1000.0)

    @property
    def pending(self) -> bool:
        return self._first is not None

    def event(self, now: float) -> None:
        """Record an event at ``now``."""
        if self._first is None:
            self._first = now
        self._last = now

    def deadline(self) -> float | None:
        """When the pending burst is due, or None when nothing is pending."""
        if self._first is None or self._last is None:
            return None
        return min(self._last + self.quiet_s, self._first + self.max_s)

    def due(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def fire(self) -> None:
        """Forget the pending burst (call when acting on it)."""
        self._first = None
        self._last = None
