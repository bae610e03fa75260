"""Hand-made bench results shared by the bench unit tests (not a test module)."""

from __future__ import annotations

from caravan.bench.arrivals import Limits, LoadLevel, Shape
from caravan.bench.lag import ClientHealth
from caravan.bench.results import LevelResult, SweepResult
from caravan.bench.stats import RequestRecord, Slo, summarize


def level(value: float, e2e_ms: list[float], statuses: list[str] | None = None,
          shape: Shape = Shape.CONCURRENCY, slos: tuple[Slo, ...] = ()) -> LevelResult:
    """One level with one request per ``e2e_ms`` entry, back to back from t=0."""
    statuses = statuses or ["OK"] * len(e2e_ms)
    recs = []
    t = 0.0
    for i, (e2e, st) in enumerate(zip(e2e_ms, statuses, strict=True)):
        ok = st == "OK"
        recs.append(RequestRecord(
            index=i, start_ms=t, end_ms=t + e2e, ttft_ms=e2e / 10 if ok else None,
            itl_ms=(e2e / 20, e2e / 20) if ok else (), tokens_in=8, tokens_out=10 if ok else 0,
            status=st, replica_id="r-0" if ok else "", session_id="", turn=0,
            error="" if ok else "boom"))
        t += e2e
    lv = LoadLevel(shape, value, Limits(len(e2e_ms)))
    return LevelResult(lv, tuple(recs), summarize(recs, slos), ClientHealth())


def sweep_result(meta: dict[str, str] | None = None) -> SweepResult:
    return SweepResult(meta or {"model": "llama", "url": "127.0.0.1:8080"}, (
        level(1, [4000.0, 4460.0]),
        level(5, [3000.0, 4000.0, 5000.0], ["OK", "UNAVAILABLE", "OK"]),
    ))
