"""Query options of a Consul read, parsed as ``agent/http.go`` does. Test code only."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tests.fakes.consul.errors import HttpError

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
DEFAULT_WAIT_S, MAX_WAIT_S = 300.0, 600.0
_BEXPR_TERM = re.compile(r'^ServiceName == "((?:[^"\\]|\\.)*)"$')
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def parse_duration(text: str) -> float:
    """Go duration ("10s", "100ms", "1m30s") -> seconds; ValueError if malformed."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(text)
    return sum(float(n) * _UNITS[u] for n, u in parts)


@dataclass(frozen=True)
class Query:
    """The parsed query options of one read (``agent/http.go`` ``parse``)."""

    min_index: int
    wait_s: float
    dc: str
    stale: bool
    passing: bool


def parse_query(query: dict[str, list[str]]) -> Query:
    """``parseWait`` (400 ``Invalid wait time`` / ``Invalid index``), ``parseDC``,
    ``parseConsistency``; ``?passing`` validated after the RPC as Consul does."""
    raw_index = query.get("index", [""])[0]
    if raw_index and not raw_index.isdigit():
        raise HttpError(400, "Invalid index")
    raw_wait = query.get("wait", [""])[0]
    try:
        wait_s = parse_duration(raw_wait) if raw_wait else DEFAULT_WAIT_S
    except ValueError:
        raise HttpError(400, "Invalid wait time") from None
    return Query(int(raw_index or 0), min(wait_s, MAX_WAIT_S), query.get("dc", [""])[0],
                  "stale" in query, flag(query, "passing"))


def parse_filter(text: str) -> frozenset[str] | None:
    """The subset of go-bexpr discovery sends: ``ServiceName == "a" or ServiceName == "b"``
    -> the names (None: no filter). Anything else is 400, as a filter bexpr cannot parse
    (``bexpr.CreateFilter`` errors are returned before the query runs)."""
    if not text:
        return None
    names = []
    for term in text.split(" or "):
        m = _BEXPR_TERM.match(term.strip())
        if m is None:
            raise HttpError(400, f"Failed to create boolean expression evaluator: {term!r}")
        names.append(re.sub(r"\\(.)", r"\1", m.group(1)))
    return frozenset(names)


def flag(query: dict[str, list[str]], name: str) -> bool:
    """``getBoolQueryParam``: bare flag is true, else ``strconv.ParseBool``."""
    if name not in query:
        return False
    value = query[name][0]
    if value == "" or value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise HttpError(400, f"Invalid value for ?{name}")
