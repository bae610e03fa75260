"""Request data: seeded synthetic prompts, JSONL parsing, multi-turn sessions."""

from __future__ import annotations

import pytest

from caravan.bench.dataset import (
    Lengths,
    PromptEntry,
    Workload,
    count_words,
    parse_jsonl,
    session_order_ok,
)


def test_same_seed_same_requests() -> None:
    w = Workload(seed=3, input=Lengths(64, 0.5), output=Lengths(32, 0.5))
    assert w.build(50) == w.build(50)
    other = Workload(seed=4, input=Lengths(64, 0.5), output=Lengths(32, 0.5))
    assert w.build(50) != other.build(50)


def test_warmup_stream_differs_from_measured() -> None:
    w = Workload(seed=3)
    assert w.build(5, stream_id=0) != w.build(5, stream_id=1)


@pytest.mark.parametrize(
    ("lengths", "lo", "hi"),
    [(Lengths(100, 0.0), 100, 100), (Lengths(100, 0.25), 75, 125), (Lengths(2, 0.9), 1, 4)],
    ids=["fixed", "quarter-spread", "floor-at-one"],
)
def test_synthetic_lengths_within_spread(lengths: Lengths, lo: int, hi: int) -> None:
    specs = Workload(seed=1, input=lengths, output=lengths).build(300)
    assert all(lo <= s.tokens_in <= hi and lo <= s.max_tokens <= hi for s in specs)
    assert all(count_words(s.prompt) == s.tokens_in for s in specs)
    if lo != hi:  # with a spread, lengths actually vary and average near the mean
        mean = sum(s.max_tokens for s in specs) / len(specs)
        assert abs(mean - lengths.mean) < 0.1 * lengths.mean + 1
        assert len({s.max_tokens for s in specs}) > 1


@pytest.mark.parametrize(("mean", "spread", "message"), [(0, 0.0, "mean"), (10, 1.0, "spread")],
                         ids=["mean-zero", "spread-one"])
def test_lengths_validation(mean: int, spread: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Lengths(mean, spread)


def test_jsonl_prompts_cycle_and_fallback_max_tokens() -> None:
    entries = (PromptEntry("hello there", 7), PromptEntry("bye"))
    specs = Workload(seed=0, output=Lengths(9), prompts=entries).build(3)
    assert [(s.prompt, s.max_tokens, s.tokens_in) for s in specs] == [
        ("hello there", 7, 2), ("bye", 9, 1), ("hello there", 7, 2)]


def test_parse_jsonl() -> None:
    lines = ['{"prompt": "a b", "max_tokens": 3}', "", '{"prompt": "c"}']
    assert parse_jsonl(lines) == (PromptEntry("a b", 3), PromptEntry("c", None))


@pytest.mark.parametrize(
    ("line", "message"),
    [("{", "p.jsonl:1: not valid JSON"), ("[1]", "p.jsonl:1: expected a JSON object"),
     ('{"prompt": ""}', "p.jsonl:1: prompt: expected a non-empty string"),
     ('{"text": "x"}', "prompt: expected a non-empty string, got None"),
     ('{"prompt": "x", "max_tokens": 0}', "max_tokens: expected a positive integer, got 0"),
     ('{"prompt": "x", "max_tokens": true}', "max_tokens: expected a positive integer, got True")],
    ids=["bad-json", "not-object", "empty-prompt", "missing-prompt", "zero-tokens", "bool-tokens"],
)
def test_parse_jsonl_errors_name_line_and_field(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_jsonl([line], "p.jsonl")


def test_parse_jsonl_empty_file() -> None:
    with pytest.raises(ValueError, match="no prompts"):
        parse_jsonl(["", "  "], "p.jsonl")


def test_sessions_turn_major_growing_history() -> None:
    specs = Workload(seed=2, input=Lengths(5), output=Lengths(4), turns=3).build(6)
    # 6 requests / 3 turns = 2 sessions; turn-major order
    assert [(s.session_id, s.turn) for s in specs] == [
        ("s0-0", 0), ("s0-1", 0), ("s0-0", 1), ("s0-1", 1), ("s0-0", 2), ("s0-1", 2)]
    assert [s.index for s in specs] == list(range(6))
    first, second = specs[0], specs[2]
    assert second.prompt.startswith(first.prompt)  # the conversation so far is repeated
    assert "Assistant: " in second.prompt
    assert second.tokens_in > first.tokens_in
    assert session_order_ok(specs)


def test_sessions_partial_last_turn() -> None:
    specs = Workload(seed=0, turns=4).build(5)  # 2 sessions: turns 0,0,1,1,2
    assert [s.turn for s in specs] == [0, 0, 1, 1, 2]
    assert session_order_ok(specs)


def test_session_order_check_detects_skips() -> None:
    specs = Workload(seed=0, turns=2).build(4)
    assert not session_order_ok([specs[2], specs[0]])


def test_turns_validation() -> None:
    with pytest.raises(ValueError, match="turns"):
        Workload(turns=0)
