"""Statistics against hand-computed cases (linear-interpolation percentiles)."""

from __future__ import annotations

import pytest

from caravan.bench.stats import (
    Dist,
    RequestRecord,
    Slo,
    dist,
    errors_by_status,
    parse_slo,
    percentile,
    summarize,
)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1, 2, 3, 4], 50, 2.5),  # rank 1.5
        ([1, 2, 3, 4], 90, 3.7),  # rank 2.7
        ([1, 2, 3, 4], 95, 3.85),  # rank 2.85
        ([1, 2, 3, 4], 99, 3.97),  # rank 2.97
        ([1, 2, 3, 4], 0, 1.0),
        ([1, 2, 3, 4], 100, 4.0),
        ([10], 99, 10.0),
        ([15, 20, 35, 40, 50], 40, 29.0),  # rank 1.6: 20 + 0.6*15
        ([15, 20, 35, 40, 50], 95, 48.0),  # rank 3.8: 40 + 0.8*10
        ([3, 1, 2], 50, 2.0),  # unsorted input
        ([5, 5, 5], 90, 5.0),
    ],
    ids=["p50-even", "p90", "p95", "p99", "p0-min", "p100-max", "single", "p40-five",
         "p95-five", "unsorted", "ties"],
)
def test_percentile_linear_interpolation(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], -1), ([1.0], 100.5)],
                         ids=["empty", "q-negative", "q-above-100"])
def test_percentile_rejects_bad_input(values: list[float], q: float) -> None:
    with pytest.raises(ValueError, match="percentile"):
        percentile(values, q)


def test_dist_of_four_values() -> None:
    assert dist([4, 1, 3, 2]) == Dist(count=4, mean=2.5, median=2.5, p90=pytest.approx(3.7),
                                      p95=pytest.approx(3.85), p99=pytest.approx(3.97), max=4)


def test_dist_of_nothing_is_zero() -> None:
    assert dist([]) == Dist()


def rec(i: int, start: float, end: float, ttft: float | None, out: int, status: str = "OK",
        itl: tuple[float, ...] = ()) -> RequestRecord:
    return RequestRecord(i, start, end, ttft, itl, 10, out, status)


RECORDS = [
    rec(0, 0.0, 1000.0, 100.0, 10, itl=(100.0, 100.0)),  # tpot 900/9 = 100
    rec(1, 500.0, 2500.0, 300.0, 5, itl=(400.0,)),  # tpot 1700/4 = 425
    rec(2, 600.0, 700.0, None, 0, "UNAVAILABLE"),
]


def test_summary_hand_computed() -> None:
    s = summarize(RECORDS)
    assert (s.requests, s.ok, s.error_count) == (3, 2, 1)
    assert s.errors == {"UNAVAILABLE": 1}
    assert s.duration_s == pytest.approx(2.5)  # first start 0 ms .. last end 2500 ms
    assert s.request_throughput == pytest.approx(2 / 2.5)
    assert s.output_token_throughput == pytest.approx(15 / 2.5)
    assert (s.tokens_in, s.tokens_out) == (20, 15)
    assert (s.e2e.mean, s.e2e.median, s.e2e.p90) == (1500.0, 1500.0, pytest.approx(1900.0))
    assert (s.ttft.mean, s.ttft.count) == (200.0, 2)
    assert (s.tpot.mean, s.tpot.max) == (pytest.approx(262.5), 425.0)
    assert (s.itl.count, s.itl.mean, s.itl.median) == (3, pytest.approx(200.0), 100.0)


@pytest.mark.parametrize(
    ("slos", "good"),
    [
        ((), 2),
        ((Slo("ttft_ms", 200),), 1),
        ((Slo("e2e_ms", 2000),), 2),  # limits are inclusive
        ((Slo("e2e_ms", 1999),), 1),
        ((Slo("ttft_ms", 500), Slo("tpot_ms", 100)), 1),
        ((Slo("ttft_ms", 50),), 0),
    ],
    ids=["no-slo", "ttft", "e2e-inclusive", "e2e-tight", "ttft-and-tpot", "none-meet"],
)
def test_goodput(slos: tuple[Slo, ...], good: int) -> None:
    s = summarize(RECORDS, slos)
    assert s.good == good
    assert s.goodput == pytest.approx(good / 2.5)


def test_tpot_undefined_for_one_token_or_unary_without_ttft() -> None:
    assert rec(0, 0, 50, 50, 1).tpot_ms is None
    assert rec(0, 0, 50, None, 9).tpot_ms is None


def test_empty_summary() -> None:
    s = summarize([])
    assert (s.requests, s.duration_s, s.request_throughput, s.e2e) == (0, 0.0, 0.0, Dist())


def test_errors_by_status_sorted() -> None:
    rs = [rec(0, 0, 1, None, 0, "UNAVAILABLE"), rec(1, 0, 1, None, 0, "DEADLINE_EXCEEDED"),
          rec(2, 0, 1, None, 0, "UNAVAILABLE"), rec(3, 0, 1, 1, 1)]
    assert list(errors_by_status(rs).items()) == [("DEADLINE_EXCEEDED", 1), ("UNAVAILABLE", 2)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("ttft_ms=500", Slo("ttft_ms", 500.0)), ("e2e_ms=6000", Slo("e2e_ms", 6000.0)),
     (" tpot_ms =12.5", Slo("tpot_ms", 12.5))],
    ids=["ttft", "e2e", "tpot-spaces"],
)
def test_parse_slo(text: str, expected: Slo) -> None:
    assert parse_slo(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("ttft=500", "METRIC one of"), ("ttft_ms", "METRIC=MS"), ("ttft_ms=abc", "not a number"),
     ("e2e_ms=-1", "positive"), ("e2e_ms=inf", "finite")],
    ids=["unknown-metric", "no-value", "not-number", "negative", "infinite"],
)
def test_parse_slo_errors_name_the_value(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_slo(text)
    assert repr(text) in str(info.value)
