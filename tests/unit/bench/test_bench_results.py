"""JSON and CSV result files: exact round trip, one CSV row per request."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from bench_samples import level, sweep_result

from caravan.bench.results import (
    SUMMARY_FIELDS,
    SweepResult,
    from_json,
    read_json,
    to_json,
    write_json,
    write_records_csv,
    write_summary_csv,
)
from caravan.bench.stats import Slo


def test_json_round_trip_is_exact(tmp_path: Path) -> None:
    result = SweepResult({"model": "m"}, (level(3, [10.0, 20.0], slos=(Slo("ttft_ms", 5),)),
                                          *sweep_result().levels))
    path = tmp_path / "out" / "bench.json"
    write_json(result, path)
    assert read_json(path) == result
    assert from_json(json.loads(json.dumps(to_json(result)))) == result


def test_json_layout(tmp_path: Path) -> None:
    data = to_json(sweep_result())
    assert data["format"] == "caravan-bench/1"
    assert [len(lv["records"]) for lv in data["levels"]] == [2, 3]
    assert data["levels"][1]["summary"]["errors"] == {"UNAVAILABLE": 1}
    assert data["levels"][0]["level"] == {"shape": "concurrency", "value": 1,
                                          "max_concurrency": None, "limits": {
                                              "requests": 2, "warmup": 0, "duration_s": None,
                                              "max_errors": None}}


@pytest.mark.parametrize(("content", "message"), [("{}", "format"), ("nope", "not a caravan")],
                         ids=["wrong-format", "not-json"])
def test_read_json_rejects_other_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "x.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        read_json(path)
    assert str(path) in str(info.value)


def test_records_csv_one_row_per_request(tmp_path: Path) -> None:
    path = tmp_path / "records.csv"
    assert write_records_csv(sweep_result(), path) == 5
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 5
    first = rows[0]
    assert (first["level"], first["status"], first["e2e_ms"]) == ("c=1", "OK", "4000.000")
    assert first["itl_ms"] == "200.000;200.000"
    assert first["tpot_ms"] == "400.000"  # (4000 - 400) / 9
    failed = rows[3]
    assert (failed["status"], failed["ttft_ms"], failed["tpot_ms"]) == ("UNAVAILABLE", "", "")


def test_summary_csv(tmp_path: Path) -> None:
    path = tmp_path / "summary.csv"
    write_summary_csv(sweep_result(), path)
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == SUMMARY_FIELDS
    assert [(r["level"], r["requests"], r["errors"], r["e2e_mean"]) for r in rows] == [
        ("c=1", "2", "0", "4230.0"), ("c=5", "3", "1", "4000.0")]
