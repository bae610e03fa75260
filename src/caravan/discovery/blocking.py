"""Pure rules of a Consul blocking-query loop: index bookkeeping, ``wait``
formatting, and exponential backoff with full jitter.

Follows Consul's "Blocking Queries / Implementation Details": reset the index
to 0 when it goes backwards (or cannot be parsed), and never block on an index
below 1 once Consul answered (an index of 0 would make every query return at
once: a busy loop).
"""

from __future__ import annotations

import random


def next_index(previous: int, raw: object) -> int:
    """The index for the next query, given the previous one and the raw
    ``X-Consul-Index`` header value of the last response.

    - unparsable or missing -> 0 (restart the loop with a non-blocking query);
    - 0 or negative -> 1 (always safe to wait on; avoids a busy loop);
    - lower than ``previous`` -> 0 (index went backwards: snapshot restore, ...);
    - otherwise the parsed value.
    """
    try:
        index = int(str(raw).strip())
    except ValueError:
        return 0
    if index <= 0:
        return 1
    if index < previous:
        return 0
    return index


def format_wait(wait_s: float) -> str:
    """A Go duration for Consul's ``wait`` parameter: whole seconds as ``"30s"``,
    anything else as milliseconds (``"250ms"``, at least ``"1ms"``)."""
    if wait_s <= 0:
        raise ValueError(f"wait_s: must be > 0, got {wait_s}")
    if float(wait_s).is_integer():
        return f"{int(wait_s)}s"
    return f"{max(1, round(wait_s * 1000))}ms"


def backoff_delay(attempt: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Seconds to sleep before retry number ``attempt`` (1 = first retry):
    full jitter, uniform in [0, min(max_s, initial_s * 2**(attempt-1))], but at
    least ``initial_s / 2`` so a failing Consul is never hammered."""
    if attempt < 1:
        raise ValueError(f"attempt: must be >= 1, got {attempt}")
    ceiling = min(max_s, initial_s * 2 ** min(attempt - 1, 62))
    return max(initial_s / 2, rng.uniform(0, ceiling))


class TokenBucket:
    """Rate limit of a blocking-query loop, as Consul's "Blocking Queries" guide asks: a
    loop whose index changes all the time must not turn into a busy loop. Up to ``burst``
    queries back to back, then at most ``rate_per_s`` a second. Pure: the caller passes
    the clock's reading."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(f"rate_per_s > 0 and burst >= 1 required, got {rate_per_s}, {burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._at: float | None = None

    def take(self, now: float) -> float:
        """Consume one token at ``now``; returns how long to wait first (0 when one is free)."""
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate_per_s
