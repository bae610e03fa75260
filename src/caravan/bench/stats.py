"""Per-request records and their summaries (pure).

Units: every latency is in **milliseconds**; ``start_ms``/``end_ms`` are offsets from
the start of the load level (the generator's monotonic clock). Throughputs are per
**second** of wall time.

Percentiles use one definition everywhere: linear interpolation between closest
ranks, the same as numpy's default (``method="linear"``): for sorted values
``x[0..n-1]`` and ``q`` in [0, 100], rank ``r = q/100 * (n-1)``, result
``x[floor(r)] + (r - floor(r)) * (x[ceil(r)] - x[floor(r)])``.

Definitions (as in vLLM's ``benchmark_serving``):
  * TTFT: start to the first streamed response. With ``--no-stream`` (stream=false)
    the first token is visible only with the whole answer, so TTFT = end-to-end latency.
  * ITL: gaps between consecutive streamed responses, pooled over all requests.
  * TPOT: per request ``(e2e - ttft) / (tokens_out - 1)`` when ``tokens_out > 1``.
  * Goodput: successful requests meeting every SLO, per second.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

OK = "OK"

SLO_METRICS = ("ttft_ms", "tpot_ms", "e2e_ms")


@dataclass(frozen=True)
class RequestRecord:
    """One measured request. ``status`` is the gRPC status code name (``OK``,
    ``UNAVAILABLE``, ``DEADLINE_EXCEEDED``...), ``STREAM_ERROR`` for an error sent
    in-band on a stream (``ModelStreamInferResponse.error_message``) or
    ``UNEXPECTED_RESPONSES`` (stream=false and not exactly one final response).
    ``replica_id`` is the ``host:port`` of the replica Envoy sent the request to
    (its ``x-caravan-upstream`` response header); ``""`` without Envoy in front."""

    index: int
    start_ms: float
    end_ms: float
    ttft_ms: float | None
    itl_ms: tuple[float, ...]
    tokens_in: int
    tokens_out: int
    status: str
    replica_id: str = ""
    session_id: str = ""
    turn: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def e2e_ms(self) -> float:
        return self.end_ms - self.start_ms

    @property
    def tpot_ms(self) -> float | None:
        if self.ttft_ms is None or self.tokens_out < 2:
            return None
        return (self.e2e_ms - self.ttft_ms) / (self.tokens_out - 1)


@dataclass(frozen=True)
class Slo:
    """A service-level objective: ``metric`` (one of ``SLO_METRICS``) <= ``limit_ms``."""

    metric: str
    limit_ms: float

    def met_by(self, r: RequestRecord) -> bool:
        value = {"ttft_ms": r.ttft_ms, "tpot_ms": r.tpot_ms, "e2e_ms": r.e2e_ms}[self.metric]
        # A request with one output token has no TPOT: nothing to violate.
        return value is None or value <= self.limit_ms


def parse_slo(text: str) -> Slo:
    """Parse ``ttft_ms=500``. ValueError names the bad part and what is expected."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or name not in SLO_METRICS:
        raise ValueError(
            f"--slo {text!r}: expected METRIC=MS with METRIC one of {', '.join(SLO_METRICS)}"
        )
    try:
        limit = float(value)
    except ValueError:
        raise ValueError(f"--slo {text!r}: limit {value!r} is not a number of ms") from None
    if not limit > 0 or math.isinf(limit):
        raise ValueError(f"--slo {text!r}: limit must be a positive finite number of ms")
    return Slo(name, limit)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation (numpy's default).

    ValueError for an empty sequence or ``q`` outside [0, 100].
    """
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    return _percentile_sorted(sorted(values), q)


def _percentile_sorted(xs: Sequence[float], q: float) -> float:
    """``percentile`` of already sorted, non-empty ``xs``."""
    rank = q / 100.0 * (len(xs) - 1)
    lo = math.floor(rank)
    hi = math.ceil(rank)
    return xs[lo] + (rank - lo) * (xs[hi] - xs[lo])


@dataclass(frozen=True)
class Dist:
    """Summary of one latency distribution, ms. All fields 0.0 when ``count == 0``."""

    count: int = 0
    mean: float = 0.0
    median: float = 0.0
    p90: float = 0.0
    p95: float = 0.0
    p99: float = 0.0
    max: float = 0.0


def dist(values: Sequence[float]) -> Dist:
    if not values:
        return Dist()
    xs = sorted(values)  # once, not once per percentile
    return Dist(
        count=len(xs),
        mean=math.fsum(xs) / len(xs),
        median=_percentile_sorted(xs, 50),
        p90=_percentile_sorted(xs, 90),
        p95=_percentile_sorted(xs, 95),
        p99=_percentile_sorted(xs, 99),
        max=xs[-1],
    )


@dataclass(frozen=True)
class Summary:
    """Summary of one load level. ``duration_s`` runs from the first request's start
    to the last one's end; throughputs divide by it (0.0 when it is 0)."""

    requests: int
    ok: int
    errors: dict[str, int]
    duration_s: float
    request_throughput: float
    output_token_throughput: float
    tokens_in: int
    tokens_out: int
    ttft: Dist
    itl: Dist
    tpot: Dist
    e2e: Dist
    slos: tuple[Slo, ...] = field(default=())
    good: int = 0
    goodput: float = 0.0

    @property
    def error_count(self) -> int:
        return self.requests - self.ok


def errors_by_status(records: Iterable[RequestRecord]) -> dict[str, int]:
    """Count of failed requests per status name, sorted by name."""
    counts = Counter(r.status for r in records if not r.ok)
    return dict(sorted(counts.items()))


def summarize(records: Sequence[RequestRecord], slos: Sequence[Slo] = ()) -> Summary:
    """Summarize the measured (non-warm-up) requests of one level.

    Latency distributions use successful requests only; errors are counted by status.
    """
    ok = [r for r in records if r.ok]
    duration_s = 0.0
    if records:
        duration_s = (max(r.end_ms for r in records) - min(r.start_ms for r in records)) / 1000.0
    tokens_out = sum(r.tokens_out for r in ok)
    good = sum(1 for r in ok if all(s.met_by(r) for s in slos))

    def per_s(n: float) -> float:
        return n / duration_s if duration_s > 0 else 0.0

    return Summary(
        requests=len(records),
        ok=len(ok),
        errors=errors_by_status(records),
        duration_s=duration_s,
        request_throughput=per_s(len(ok)),
        output_token_throughput=per_s(tokens_out),
        tokens_in=sum(r.tokens_in for r in ok),
        tokens_out=tokens_out,
        ttft=dist([r.ttft_ms for r in ok if r.ttft_ms is not None]),
        itl=dist([g for r in ok for g in r.itl_ms]),
        tpot=dist([t for r in ok if (t := r.tpot_ms) is not None]),
        e2e=dist([r.e2e_ms for r in ok]),
        slos=tuple(slos),
        good=good,
        goodput=per_s(good),
    )
