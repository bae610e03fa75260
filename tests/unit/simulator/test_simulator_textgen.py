"""Deterministic text and output-length planning."""

from __future__ import annotations

import itertools

import pytest

from caravan.simulator.textgen import VOCAB, Plan, Words, count_prompt_tokens, plan_output, seed_for


@pytest.mark.parametrize(
    ("prompt", "tokens"),
    [("", 0), ("   ", 0), ("hello", 1), ("hello  world\n again\t!", 4)],
    ids=["empty", "blank", "one", "mixed-whitespace"],
)
def test_prompt_tokens_are_whitespace_words(prompt: str, tokens: int) -> None:
    assert count_prompt_tokens(prompt) == tokens


def test_same_seed_same_words_different_seed_different_words() -> None:
    a, b, c = Words(7, 50), Words(7, 50), Words(8, 50)
    assert a.text(0, 50) == b.text(0, 50)
    assert a.text(0, 50) != c.text(0, 50)
    assert all(w in VOCAB for w in a.text(0, 50).split())


@pytest.mark.parametrize(
    "cuts",
    [[0, 50], [0, 1, 2, 50], [0, 10, 10, 33, 50]],
    ids=["whole", "token-by-token-start", "with-empty-chunk"],
)
def test_chunks_concatenate_to_the_whole_text(cuts: list[int]) -> None:
    words = Words(42, 50)
    pieces = [words.text(a, b) for a, b in itertools.pairwise(cuts)]
    assert "".join(pieces) == words.text(0, 50)
    assert words.text(0, 50).startswith(" ") and len(words.text(0, 50).split()) == 50


def test_seed_defaults_to_a_hash_of_the_prompt() -> None:
    assert seed_for("abc", None) == seed_for("abc", None) != seed_for("abd", None)
    assert seed_for("abc", 5) == 5


@pytest.mark.parametrize(
    ("max_tokens", "room", "expected"),
    [(300, 4000, Plan(300, "length")), (300, 100, Plan(100, "length")), (1, 10, Plan(1, "length"))],
    ids=["as-asked", "capped-by-model-len", "one"],
)
def test_plan_with_max_tokens(max_tokens: int, room: int, expected: Plan) -> None:
    assert plan_output(1, max_tokens, 300, room) == expected


def test_plan_without_max_tokens_draws_around_the_mean() -> None:
    plans = [plan_output(seed, None, 300, 4000) for seed in range(200)]
    lengths = [p.output_tokens for p in plans]
    assert min(lengths) >= 150 and max(lengths) <= 450
    assert 250 <= sum(lengths) / len(lengths) <= 350
    assert {p.finish_reason for p in plans} == {"stop"}
    assert plan_output(3, None, 300, 4000) == plan_output(3, None, 300, 4000)
    assert plan_output(3, None, 300, 10) == Plan(10, "length")
