"""Abuse limits of the ADS server (pure; issue 17, Medium #5 and #6).

* ``MAX_RESOURCE_NAMES``: names one request may carry (SotW ``resource_names``;
  delta ``resource_names_subscribe`` + ``resource_names_unsubscribe``) and names one
  delta stream may hold subscribed per type. A request over it is refused and its
  stream closed with RESOURCE_EXHAUSTED (``names_error``). Envoy asks for one EDS
  name per model cluster, so a legitimate request is far below it.
* ``MAX_PENDING_REQUESTS``: requests read from a stream but not yet handled; a client
  that sends faster than it reads its answers (the handler is then blocked on a
  flow-controlled write) is cut off instead of queueing without bound.
* ``WRITE_STALL_S``: one response not taken by the client within this many seconds
  ends the stream (a client that never reads).
* ``MAX_RECEIVE_BYTES``: the largest request message the server accepts.
* ``clip``: client-supplied text (type URLs, NACK ``error_detail``) bounded before it
  is logged or kept for ``/debug/clients``.
* ``WarningLimiter``: at most ``per_window`` warnings of one kind per ``window_s``;
  the next admitted line reports how many were dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_RESOURCE_NAMES = 1024
MAX_PENDING_REQUESTS = 8
WRITE_STALL_S = 60.0
MAX_RECEIVE_BYTES = 2 * 1024 * 1024
MAX_LOGGED_CHARS = 256


def clip(text: str, limit: int = MAX_LOGGED_CHARS) -> str:
    """``text`` cut to ``limit`` characters (plus a marker saying how many were cut)."""
    if limit < 1:
        raise ValueError(f"limit: must be >= 1, got {limit}")
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def names_error(what: str, count: int, limit: int = MAX_RESOURCE_NAMES) -> str | None:
    """The refusal for ``count`` resource names in ``what``, or None within ``limit``."""
    if count <= limit:
        return None
    return f"caravan xds: {what} names {count} resources; at most {limit} are accepted"


@dataclass
class _Window:
    start: float
    admitted: int = 0
    dropped: int = 0


@dataclass
class WarningLimiter:
    """Rate limit for repeated log lines, by kind. Event-loop thread only."""

    per_window: int = 5
    window_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    _windows: dict[str, _Window] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.per_window < 1 or self.window_s <= 0:
            raise ValueError(f"WarningLimiter: per_window must be >= 1 and window_s > 0, got "
                             f"{self.per_window}, {self.window_s}")

    def admit(self, kind: str) -> int | None:
        """None: drop this line. Otherwise log it, with the returned number of lines
        of ``kind`` dropped since the last admitted one (0 when none)."""
        now = self.clock()
        w = self._windows.get(kind)
        if w is None or now - w.start >= self.window_s:
            dropped = 0 if w is None else w.dropped
            self._windows[kind] = _Window(now, admitted=1)
            return dropped
        if w.admitted < self.per_window:
            w.admitted += 1
            dropped, w.dropped = w.dropped, 0
            return dropped
        w.dropped += 1
        return None
