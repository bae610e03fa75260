"""Benchmark results and their files: JSON (everything) and CSV (records, summaries).

JSON layout (``format`` = ``caravan-bench/1``)::

    {"format": "caravan-bench/1",
     "meta": {"git_rev": ..., "url": ..., "model": ..., ...},      # strings
     "levels": [{"level": {"shape": "concurrency", "value": 10, "max_concurrency": null,
                           "limits": {"requests": 100, "warmup": 0, ...}},
                 "summary": {...Summary, ms and per-second...},
                 "client": {...ClientHealth, ms...},
                 "stopped": "" | "duration" | "max_errors",
                 "warnings": [...],
                 "records": [{...RequestRecord, ms...}, ...]}]}

``to_json``/``from_json`` are pure and exact inverses (tested). CSV: one row per
request (``records.csv``: level label, value and every record field, ITL gaps joined
by ``;``) and one row per level (``summary.csv``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caravan.bench.arrivals import Limits as _Limits
from caravan.bench.arrivals import LoadLevel, Shape
from caravan.bench.lag import ClientHealth, LagThresholds
from caravan.bench.stats import Dist, RequestRecord, Slo, Summary

FORMAT = "caravan-bench/1"


@dataclass(frozen=True)
class LevelResult:
    level: LoadLevel
    records: tuple[RequestRecord, ...]
    summary: Summary
    client: ClientHealth
    stopped: str = ""
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class SweepResult:
    meta: dict[str, str]
    levels: tuple[LevelResult, ...]

    @property
    def shape(self) -> Shape:
        return self.levels[0].level.shape if self.levels else Shape.CONCURRENCY


def to_json(result: SweepResult) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "meta": dict(result.meta),
        "levels": [_level_json(lv) for lv in result.levels],
    }


def _level_json(lv: LevelResult) -> dict[str, Any]:
    level = {
        "shape": lv.level.shape.value,
        "value": lv.level.value,
        "max_concurrency": lv.level.max_concurrency,
        "limits": dataclasses.asdict(lv.level.limits),
    }
    records = []
    for r in lv.records:
        d = dataclasses.asdict(r)
        d["itl_ms"] = list(r.itl_ms)
        records.append(d)
    return {
        "level": level,
        "summary": dataclasses.asdict(lv.summary),
        "client": dataclasses.asdict(lv.client),
        "stopped": lv.stopped,
        "warnings": list(lv.warnings),
        "records": records,
    }


def from_json(data: dict[str, Any]) -> SweepResult:
    """Inverse of ``to_json``. ValueError when ``format`` is not ``caravan-bench/1``."""
    if data.get("format") != FORMAT:
        raise ValueError(f"format: expected {FORMAT!r}, got {data.get('format')!r}")
    return SweepResult(dict(data["meta"]), tuple(_level_from(d) for d in data["levels"]))


def _level_from(d: dict[str, Any]) -> LevelResult:
    lv = d["level"]
    limits = _Limits(**lv["limits"])
    level = LoadLevel(Shape(lv["shape"]), lv["value"], limits, lv["max_concurrency"])
    records = tuple(RequestRecord(**{**r, "itl_ms": tuple(r["itl_ms"])}) for r in d["records"])
    s = dict(d["summary"])
    for key in ("ttft", "itl", "tpot", "e2e"):
        s[key] = Dist(**s[key])
    s["slos"] = tuple(Slo(**x) for x in s["slos"])
    c = dict(d["client"])
    c["thresholds"] = LagThresholds(**c["thresholds"])
    return LevelResult(
        level, records, Summary(**s), ClientHealth(**c), d["stopped"], tuple(d["warnings"])
    )


def write_json(result: SweepResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(result), indent=1) + "\n")


def read_json(path: Path) -> SweepResult:
    """Read a result file. ValueError naming the file when it is not a bench result."""
    try:
        return from_json(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a caravan bench result ({exc})") from None


RECORD_FIELDS = [f.name for f in dataclasses.fields(RequestRecord)]


def write_records_csv(result: SweepResult, path: Path) -> int:
    """One row per request; returns the number of rows written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["level", "shape", "value", *RECORD_FIELDS, "e2e_ms", "tpot_ms"])
        for lv in result.levels:
            for r in lv.records:
                values = [getattr(r, name) for name in RECORD_FIELDS]
                values[RECORD_FIELDS.index("itl_ms")] = ";".join(f"{g:.3f}" for g in r.itl_ms)
                tpot = "" if r.tpot_ms is None else f"{r.tpot_ms:.3f}"
                row = [lv.level.label, lv.level.shape.value, lv.level.value, *values]
                w.writerow([*("" if v is None else v for v in row), f"{r.e2e_ms:.3f}", tpot])
                rows += 1
    return rows


SUMMARY_FIELDS = [
    "level", "shape", "value", "requests", "ok", "errors", "duration_s",
    "request_throughput", "output_token_throughput", "goodput",
    *(f"{m}_{s}" for m in ("ttft", "itl", "tpot", "e2e")
      for s in ("mean", "median", "p90", "p95", "p99")),
]


def summary_row(lv: LevelResult) -> dict[str, Any]:
    s = lv.summary
    row: dict[str, Any] = {
        "level": lv.level.label, "shape": lv.level.shape.value, "value": lv.level.value,
        "requests": s.requests, "ok": s.ok, "errors": s.error_count,
        "duration_s": round(s.duration_s, 4),
        "request_throughput": round(s.request_throughput, 4),
        "output_token_throughput": round(s.output_token_throughput, 4),
        "goodput": round(s.goodput, 4),
    }
    for m in ("ttft", "itl", "tpot", "e2e"):
        d: Dist = getattr(s, m)
        for stat in ("mean", "median", "p90", "p95", "p99"):
            row[f"{m}_{stat}"] = round(getattr(d, stat), 3)
    return row


def write_summary_csv(result: SweepResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
        w.writeheader()
        for lv in result.levels:
            w.writerow(summary_row(lv))
