"""Console table rows in the reference form, and run comparison rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench_samples import level, sweep_result
from rich.console import Console

from caravan.bench.arrivals import Shape
from caravan.bench.compare import METRICS, compare_headers, compare_rows, compare_table, ratio
from caravan.bench.report import fmt_ms, fmt_s, headers, markdown_table, reference_table, table_rows
from caravan.bench.results import SweepResult
from caravan.bench.stats import Slo


def test_headers_reference_form() -> None:
    assert headers(sweep_result()) == [
        "Concurrency", "Total requests", "Mean response time", "P95 latency", "Errors",
        "TTFT p50", "ITL mean", "Tokens/s"]


def test_rows_hand_computed() -> None:
    rows = table_rows(sweep_result())
    # level 1: e2e 4000, 4460 -> mean 4.23 s, p95 = 4000 + 0.95*460 = 4437 ms;
    # ttft 400, 446 -> p50 423; itl 200,200,223,223 -> mean 211.5; 20 tokens over 8.46 s
    assert rows[0] == ["1", "2", "4.23s", "4.44s", "0", "423 ms", "212 ms", "2"]
    # level 5: ok e2e 3000, 5000 (the failed one is excluded) -> mean 4.00 s, p95 4.90 s
    assert rows[1] == ["5", "3", "4.00s", "4.90s", "1 (UNAVAILABLE 1)", "400 ms", "200 ms", "2"]


def test_rate_sweep_header_and_goodput_column() -> None:
    slo = (Slo("e2e_ms", 3500),)
    result = SweepResult({}, (level(2, [3000.0, 4000.0], shape=Shape.POISSON, slos=slo),))
    assert headers(result)[0] == "Rate (req/s)"
    assert headers(result)[-1] == "Goodput"
    # 1 of 2 requests meets e2e <= 3500 ms, over 7 s
    assert table_rows(result)[0][-1] == "0.14 req/s (50%)"


@pytest.mark.parametrize(("ms", "text"),
                         [(4230.0, "4.23s"), (1000.0, "1.00s"), (999.4, "999 ms"), (5.0, "5.0 ms")],
                         ids=["reference", "one-second", "below-a-second", "small"])
def test_fmt_s(ms: float, text: str) -> None:
    assert fmt_s(ms) == text


@pytest.mark.parametrize(("ms", "text"), [(12.345, "12.3 ms"), (1234.5, "1234 ms")],
                         ids=["small", "large"])
def test_fmt_ms(ms: float, text: str) -> None:
    assert fmt_ms(ms) == text


def test_rich_table_renders_every_row() -> None:
    console = Console(width=200, record=True)
    console.print(reference_table(sweep_result()))
    text = console.export_text()
    assert "caravan bench: llama at 127.0.0.1:8080" in text
    assert "4.23s" in text and "UNAVAILABLE 1" in text


def test_markdown_table() -> None:
    md = markdown_table(sweep_result()).splitlines()
    assert md[0].startswith("| Concurrency | Total requests | Mean response time | P95 latency")
    assert md[2] == "| 1 | 2 | 4.23s | 4.44s | 0 | 423 ms | 212 ms | 2 |"
    assert len(md) == 4


@pytest.mark.parametrize(("a", "b", "text"), [(2.0, 3.0, "1.50x"), (4.0, 1.0, "0.25x"),
                                              (0.0, 1.0, "-")], ids=["up", "down", "zero-base"])
def test_ratio(a: float, b: float, text: str) -> None:
    assert ratio(a, b) == text


def test_compare_rows_side_by_side_with_ratios() -> None:
    a = SweepResult({}, (level(1, [2000.0, 2000.0]), level(5, [3000.0])))
    b = SweepResult({}, (level(1, [3000.0, 3000.0]),))
    hs = compare_headers(["A", "B"])
    assert hs == ["Level", "Metric", "A", "B", "B/A"]
    rows = compare_rows([a, b])
    assert len(rows) == 2 * len(METRICS)
    assert rows[0] == ["concurrency 1", "Mean response time (s)", "2.00", "3.00", "1.50x"]
    assert rows[1] == ["", "P95 latency (s)", "2.00", "3.00", "1.50x"]
    # B lacks concurrency 5
    assert rows[len(METRICS)] == ["concurrency 5", "Mean response time (s)", "3.00", "-", "-"]
    assert all(len(r) == len(hs) for r in rows)


def test_compare_table_label_mismatch() -> None:
    with pytest.raises(ValueError, match="one label per run"):
        compare_table([sweep_result()], ["a", "b"])


def test_load_runs_labels_and_errors(tmp_path: Path) -> None:
    from caravan.bench.compare import load_runs
    from caravan.bench.results import write_json
    from caravan.errors import ConfigError

    paths = [tmp_path / d / "bench.json" for d in ("base", "new")]
    for p in paths:
        write_json(sweep_result(), p)
    loaded, names = load_runs(paths, None)
    assert len(loaded) == 2 and names == ["base", "new"]  # same stem: the directories name them
    assert load_runs(paths, "a,b")[1] == ["a", "b"]
    with pytest.raises(ConfigError, match="--labels: got 1 labels for 2 runs"):
        load_runs(paths, "a")
    with pytest.raises(ConfigError, match=r"missing\.json: No such file"):
        load_runs([tmp_path / "missing.json"], None)
