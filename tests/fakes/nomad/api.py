"""The Nomad HTTP API's vocabulary in the fake: JSON documents, keys, times, errors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

Json = dict[str, Any]
Key = tuple[str, str]  # (namespace, job ID)
NS = 1_000_000_000  # nanoseconds per second: Nomad's durations and times are int64 ns


class ApiError(Exception):
    """An HTTP error answer: ``status`` and Nomad's plain-text ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def rfc3339(t: float | None) -> str:
    if t is None:
        return "0001-01-01T00:00:00Z"
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
