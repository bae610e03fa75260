"""Workload generators: seeded, and their sharing is real at the simulator's block size."""

from __future__ import annotations

import itertools

import pytest

from caravan.bench.dataset import Lengths, Workload, session_order_ok
from caravan.bench.workloads import (
    Kind,
    Source,
    TraceRecord,
    WorkloadSpec,
    conversation_turns,
    make_workload,
    parse_trace,
    simulated_answer,
    take,
)
from caravan.errors import ConfigError
from caravan.simulator.kvcache import BLOCK_SIZE, block_hashes
from caravan.simulator.textgen import token_ids

TRACE = (TraceRecord(1000, 1000, 5, (0, 1)), TraceRecord(1500, 1000, 0, (0, 2)),
         TraceRecord(4000, 300, 9, (3,)))
SPECS = {
    Kind.UNIQUE: WorkloadSpec(Kind.UNIQUE, Lengths(20, 0.5)),
    Kind.SHARED_PREFIX: WorkloadSpec(Kind.SHARED_PREFIX, Lengths(8), prefixes=3, prefix_tokens=100),
    Kind.MULTI_TURN: WorkloadSpec(Kind.MULTI_TURN, Lengths(10), Lengths(6), conversations=4),
    Kind.TRACE: WorkloadSpec(Kind.TRACE, trace=TRACE, trace_block_tokens=32),
}


def blocks(prompt: str) -> tuple[int, ...]:
    """The simulator's full-block hashes of ``prompt`` (16 words a block)."""
    return block_hashes(token_ids(prompt.split()))


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.value)
def test_same_seed_same_requests(kind: Kind) -> None:
    spec = SPECS[kind]
    first = take(make_workload(spec, seed=5), 40)
    assert first == take(make_workload(spec, seed=5), 40)
    assert first != take(make_workload(spec, seed=6), 40)
    if kind is not Kind.TRACE:  # a trace is one series; the others have one per stream
        assert first != take(make_workload(spec, seed=5, stream=1), 40)


def test_unique_is_todays_workload() -> None:
    spec = SPECS[Kind.UNIQUE]
    old = Workload(5, spec.input, spec.output).build(30, stream_id=2)
    new = Source(spec, seed=5).build(30, stream_id=2)
    assert new == old
    assert [r.prompt for r in take(make_workload(spec, 5, 2), 30)] == [s.prompt for s in old]


def test_shared_prefix_shares_whole_blocks_only_within_a_prefix() -> None:
    reqs = take(make_workload(SPECS[Kind.SHARED_PREFIX], seed=1), 60)
    by_prefix: dict[tuple[int, ...], list[str]] = {}
    shared = 100 // BLOCK_SIZE  # 6 full blocks inside a 100-word prefix
    for r in reqs:
        by_prefix.setdefault(blocks(r.prompt)[:shared], []).append(r.prompt)
    assert len(by_prefix) == 3  # every request starts with one of the 3 documents
    assert all(len(p) > 1 for p in by_prefix.values())
    firsts = [key[0] for key in by_prefix]
    assert len(set(firsts)) == 3  # different documents share no block
    assert len({r.prompt for r in reqs}) == len(reqs)  # the questions are unique
    assert all(len(r.prompt.split()) == 100 + 1 + 8 for r in reqs)  # doc, "Question:", question


def test_multi_turn_history_grows_and_turns_are_ordered() -> None:
    reqs = take(make_workload(SPECS[Kind.MULTI_TURN], seed=2), 200)
    chats: dict[str, list[str]] = {}
    for r in reqs:
        assert r.turn == len(chats.setdefault(r.conversation, []))
        chats[r.conversation].append(r.prompt)
    assert len(chats) > 4  # finished conversations are replaced by new ones
    answer_blocks = 0
    for prompts in chats.values():
        for before, after in itertools.pairwise(prompts):
            assert before.endswith("Assistant:") and after.startswith(before + " ")
            # what the simulated engine caches after turn t: its prompt and its answer
            answered = [*before.split(), *simulated_answer(before, 6)]
            n = len(answered) // BLOCK_SIZE
            assert blocks(after)[:n] == block_hashes(token_ids(answered))  # all of it hits
            answer_blocks += n - len(blocks(before))
    assert answer_blocks > 10  # blocks completed by an answer, hit by the next turn
    specs = Source(SPECS[Kind.MULTI_TURN], seed=2).build(50)
    assert session_order_ok(specs) and all(s.session_id == "" for s in specs)


def test_conversation_lengths_follow_the_mean() -> None:
    import random

    spec = WorkloadSpec(Kind.MULTI_TURN, turns_mean=3.51, turns_max=1000)
    rng = random.Random(0)
    turns = [conversation_turns(spec, rng) for _ in range(20000)]
    assert min(turns) == 1 and abs(sum(turns) / len(turns) - 3.51) < 0.1
    capped = WorkloadSpec(Kind.MULTI_TURN, turns_mean=3.0, turns_max=4)
    assert max(conversation_turns(capped, rng) for _ in range(1000)) == 4


def test_trace_blocks_shared_by_hash_id_and_times_kept() -> None:
    reqs = take(make_workload(SPECS[Kind.TRACE], seed=3), 10)
    assert [r.send_at_s for r in reqs] == [0.0, 0.5, 3.0]
    assert [r.max_tokens for r in reqs] == [5, 1, 9]  # output 0 still asks for one token
    # 32 words per 512-token block: 1000 tokens -> 62 words, 300 -> 19
    assert [len(r.prompt.split()) for r in reqs] == [62, 62, 19]
    a, b, c = (blocks(r.prompt) for r in reqs)
    assert a[:2] == b[:2] and a[2] != b[2]  # hash id 0 = 32 words = 2 shared blocks
    assert not set(c) & set(a)


def test_parse_trace_mooncake_lines() -> None:
    lines = ['{"timestamp": 0, "input_length": 6758, "output_length": 500, "hash_ids": [0, 1]}',
             "",
             '{"timestamp": 3000, "input_length": 915, "output_length": 355, "hash_ids": [0, 462],'
             ' "session_id": "x"}']
    assert parse_trace(lines) == (TraceRecord(0, 6758, 500, (0, 1)),
                                  TraceRecord(3000, 915, 355, (0, 462)))


@pytest.mark.parametrize(
    ("line", "message"),
    [("{", "t.jsonl:2: not valid JSON"),
     ("[]", "t.jsonl:2: expected a JSON object"),
     ('{"input_length": 1, "output_length": 1, "hash_ids": []}', "t.jsonl:2: timestamp: expected"),
     ('{"timestamp": -1, "input_length": 1, "output_length": 1, "hash_ids": []}', "timestamp"),
     ('{"timestamp": 5, "input_length": 0, "output_length": 1, "hash_ids": []}',
      "t.jsonl:2: input_length: expected an integer >= 1, got 0"),
     ('{"timestamp": 5, "input_length": 3, "output_length": "2", "hash_ids": []}',
      "t.jsonl:2: output_length: expected an integer >= 0, got '2'"),
     ('{"timestamp": 5, "input_length": 3, "output_length": 2, "hash_ids": [1, -2]}',
      "t.jsonl:2: hash_ids: expected a list of integers >= 0"),
     ('{"timestamp": 5, "input_length": 3, "output_length": 2}', "t.jsonl:2: hash_ids"),
     ('{"timestamp": 1, "input_length": 3, "output_length": 2, "hash_ids": []}',
      "t.jsonl:2: timestamp: 1 is earlier than the line before")],
    ids=["bad-json", "not-object", "no-timestamp", "negative-time", "zero-input", "string-output",
         "negative-id", "no-ids", "out-of-order"],
)
def test_parse_trace_errors_name_line_and_field(line: str, message: str) -> None:
    first = '{"timestamp": 2, "input_length": 3, "output_length": 2, "hash_ids": [1]}'
    with pytest.raises(ConfigError, match=message):
        parse_trace([first, line], "t.jsonl")


def test_parse_trace_empty() -> None:
    with pytest.raises(ConfigError, match=r"t\.jsonl: no trace records"):
        parse_trace(["", " "], "t.jsonl")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"prefixes": 0}, "prefixes: must be >= 1"), ({"prefix_tokens": 0}, "prefix_tokens"),
     ({"turns_mean": 0.5}, "turns_mean"), ({"turns_mean": 40.0}, "turns_mean"),
     ({"kind": Kind.TRACE}, "trace: the trace workload needs")],
    ids=["prefixes", "prefix-tokens", "turns-mean-low", "turns-mean-high", "empty-trace"],
)
def test_spec_validation_names_the_field(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WorkloadSpec(**kwargs)  # type: ignore[arg-type]


def test_the_simulated_engine_serves_the_next_turn_from_its_cache() -> None:
    """Turn 1 through the engine after turn 0: its prompt's blocks up to and including
    turn 0's answer are cache hits (the sequence the replica hashes: prompt + output)."""
    from caravan.simulator.engine import Engine, EngineConfig, SeqRequest

    reqs = take(make_workload(WorkloadSpec(Kind.MULTI_TURN, Lengths(40), Lengths(40)), seed=4), 200)
    second = next(r for r in reqs if r.turn == 1)
    first = next(r for r in reqs if r.conversation == second.conversation)
    engine = Engine(EngineConfig())
    for i, r in enumerate((first, second)):
        words = [*r.prompt.split(), *simulated_answer(r.prompt, r.max_tokens)]
        engine.submit(SeqRequest(str(i), len(r.prompt.split()), r.max_tokens, i * 10_000.0,
                                 block_hashes(token_ids(words))))
        adv = engine.advance(i * 10_000.0 + 9_999.0)
    answered = len(first.prompt.split()) + first.max_tokens
    assert adv.admitted[0].cached_tokens == answered // BLOCK_SIZE * BLOCK_SIZE
    assert adv.admitted[0].cached_tokens > len(first.prompt.split())  # the answer hit too


def test_multi_turn_conversations_end_before_the_context_is_full() -> None:
    spec = WorkloadSpec(Kind.MULTI_TURN, Lengths(50), Lengths(50), turns_mean=20.0, turns_max=40,
                        max_context=600)
    reqs = take(make_workload(spec, seed=1), 500)
    assert max(len(r.prompt.split()) + r.max_tokens for r in reqs) <= 600
    assert max(r.turn for r in reqs) >= 4  # long chats still reach the bound's depth
