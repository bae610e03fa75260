"""Load shapes: schedules, seeded Poisson arrivals, sweep parsing."""

from __future__ import annotations

import itertools
import statistics

import pytest

from caravan.bench.arrivals import (
    Limits,
    LoadLevel,
    Shape,
    arrival_offsets,
    parse_counts,
    parse_values,
)


def test_constant_schedule_is_evenly_spaced() -> None:
    assert arrival_offsets(4.0, 5, poisson=False, seed=0) == (0.0, 0.25, 0.5, 0.75, 1.0)


def test_poisson_same_seed_same_schedule_other_seed_differs() -> None:
    a = arrival_offsets(10.0, 200, poisson=True, seed=7)
    assert a == arrival_offsets(10.0, 200, poisson=True, seed=7)
    assert a != arrival_offsets(10.0, 200, poisson=True, seed=8)


@pytest.mark.parametrize("rate", [0.5, 2.0, 50.0], ids=["slow", "mid", "fast"])
def test_poisson_mean_rate(rate: float) -> None:
    offsets = arrival_offsets(rate, 20_001, poisson=True, seed=1)
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert offsets[0] == 0.0
    assert all(g >= 0 for g in gaps)
    # 20000 exponential gaps: the mean is within ~1% (sd/sqrt(n) = 0.7%) of 1/rate.
    assert statistics.fmean(gaps) == pytest.approx(1 / rate, rel=0.03)
    # exponential: standard deviation equals the mean
    assert statistics.pstdev(gaps) == pytest.approx(1 / rate, rel=0.05)


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rate"):
        arrival_offsets(0.0, 3, poisson=False, seed=0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1,5,10,25,50,100", (1, 5, 10, 25, 50, 100)), (" 2 , 0.5 ", (2.0, 0.5)), ("3,", (3.0,))],
    ids=["reference-sweep", "spaces-fraction", "trailing-comma"],
)
def test_parse_values(text: str, expected: tuple[float, ...]) -> None:
    assert parse_values(text, "--rate") == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "comma-separated"), ("1,x", "'x' is not a number"),
     ("1,-2", "'-2' must be a positive number"), ("0", "'0' must be a positive number")],
    ids=["empty", "not-number", "negative", "zero"],
)
def test_parse_values_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_values(text, "--concurrency")
    assert "--concurrency" in str(info.value)


@pytest.mark.parametrize(
    ("text", "levels", "expected"),
    [("100", 3, (100, 100, 100)), ("100,100,500", 3, (100, 100, 500))],
    ids=["one-for-all", "one-per-level"],
)
def test_parse_counts(text: str, levels: int, expected: tuple[int, ...]) -> None:
    assert parse_counts(text, levels) == expected


def test_parse_counts_wrong_length() -> None:
    with pytest.raises(ValueError, match="2 counts for 3 load levels"):
        parse_counts("1,2", 3)


@pytest.mark.parametrize(
    ("level", "label"),
    [(LoadLevel(Shape.CONCURRENCY, 10), "c=10"), (LoadLevel(Shape.CONSTANT, 2.5), "rate=2.5"),
     (LoadLevel(Shape.POISSON, 4, max_concurrency=8), "poisson=4/cap=8")],
    ids=["concurrency", "constant", "poisson-cap"],
)
def test_level_labels(level: LoadLevel, label: str) -> None:
    assert level.label == label


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"requests": 0}, "requests"), ({"warmup": -1}, "warmup"),
     ({"duration_s": 0}, "duration_s"), ({"max_errors": 0}, "max_errors")],
    ids=["requests", "warmup", "duration", "max-errors"],
)
def test_limits_validation(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Limits(**kwargs)  # type: ignore[arg-type]
