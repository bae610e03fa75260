"""Pure blocking-query rules: index bookkeeping, wait format, backoff."""

from __future__ import annotations

import random

import pytest

from caravan.discovery.blocking import backoff_delay, format_wait, next_index

INDEX = [
    ("first response", 0, "42", 42),
    ("advances", 42, "57", 57),
    ("unchanged (wait elapsed)", 42, "42", 42),
    ("went backwards resets", 42, "7", 0),
    ("unparsable resets", 42, "abc", 0),
    ("missing header resets", 42, None, 0),
    ("zero is never used to block", 0, "0", 1),
    ("negative is never used to block", 0, "-3", 1),
    ("whitespace tolerated", 5, " 9 ", 9),
]


@pytest.mark.parametrize(("prev", "raw", "want"), [c[1:] for c in INDEX], ids=[c[0] for c in INDEX])
def test_next_index(prev: int, raw: object, want: int) -> None:
    assert next_index(prev, raw) == want


WAITS = [("whole seconds", 30.0, "30s"), ("sub-second", 0.25, "250ms"),
         ("fractional", 1.5, "1500ms"), ("tiny", 0.0001, "1ms")]


@pytest.mark.parametrize(("wait", "want"), [w[1:] for w in WAITS], ids=[w[0] for w in WAITS])
def test_format_wait(wait: float, want: str) -> None:
    assert format_wait(wait) == want


def test_format_wait_rejects_non_positive() -> None:
    with pytest.raises(ValueError, match="wait_s: must be > 0, got 0"):
        format_wait(0)


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (10, 30.0),
                                                  (1000, 30.0)],
                         ids=["first", "second", "third", "capped", "huge-attempt"])
def test_backoff_bounded_by_exponential_ceiling(attempt: int, ceiling: float) -> None:
    rng = random.Random(7)
    delays = [backoff_delay(attempt, 0.5, 30.0, rng) for _ in range(200)]
    assert all(0.25 <= d <= ceiling for d in delays)
    assert max(delays) > ceiling * 0.8  # jittered over the whole range, not fixed


def test_backoff_is_deterministic_for_a_seed() -> None:
    a = [backoff_delay(n, 0.5, 30, random.Random(1)) for n in range(1, 6)]
    b = [backoff_delay(n, 0.5, 30, random.Random(1)) for n in range(1, 6)]
    assert a == b


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError, match="attempt: must be >= 1"):
        backoff_delay(0, 0.5, 30, random.Random(0))
