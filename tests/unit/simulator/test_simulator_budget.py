"""The per-step token budget (vLLM V1's chunked prefill), against hand-computed timelines.

Costs used throughout: 10 ms per step, +1 ms per extra scheduled sequence, 0.1 ms per
prefilled token, a budget of 100 tokens per step.
"""

from __future__ import annotations

import pytest

from caravan.simulator.engine import Advance, Engine, EngineConfig, SeqRequest
from caravan.simulator.kvcache import block_hashes
from caravan.spec import EngineArgs, SimulatorParams

CFG = EngineConfig(max_num_seqs=4, max_num_batched_tokens=100, max_model_len=512,
                   kv_cache_tokens=4096, decode_ms_per_step=10.0, decode_ms_per_seq=1.0,
                   prefill_ms_per_token=0.1)


def firsts(adv: Advance) -> dict[str, float]:
    return {f.id: f.t_ms for f in adv.first_tokens}


def finishes(adv: Advance) -> dict[str, float]:
    return {f.id: f.t_ms for f in adv.finished}


def test_a_long_prompt_is_prefilled_in_budget_sized_chunks() -> None:
    engine = Engine(CFG)
    engine.submit(SeqRequest("a", 250, 2, 0.0))
    adv = engine.advance(1e9)
    # chunks 100 (0-20 ms), 100 (20-40), 50 (40-55, first token), one decode (55-65)
    assert firsts(adv) == {"a": pytest.approx(55.0)}
    assert finishes(adv) == {"a": pytest.approx(65.0)}
    assert (adv.steps, adv.generated_tokens) == (4, 2)
    assert [a.admitted_ms for a in adv.admitted] == [0.0]


def test_a_request_waits_behind_a_partial_prefill_then_shares_its_last_step() -> None:
    engine = Engine(CFG)
    engine.submit(SeqRequest("a", 250, 1, 0.0))
    engine.submit(SeqRequest("c", 10, 1, 0.0))
    adv = engine.advance(1e9)
    # steps 0-1 belong to a; step 2 runs a's last 50 tokens and all of c's 10:
    # 40 + 10 + 1 (two sequences) + 6 (60 tokens) = 57 ms
    assert firsts(adv) == {"a": pytest.approx(57.0), "c": pytest.approx(57.0)}
    assert {a.id: a.admitted_ms for a in adv.admitted} == {"a": 0.0, "c": 40.0}


def test_running_decodes_take_budget_before_prefill_chunks() -> None:
    engine = Engine(CFG)
    engine.submit(SeqRequest("a", 10, 3, 0.0))
    engine.submit(SeqRequest("b", 150, 1, 5.0))
    adv = engine.advance(1e9)
    # step 0 (0-11): a's prompt. step 1 (11-31.9): a decodes (1 token), b gets the 99
    # left. step 2 (31.9-48): a decodes, b's last 51 tokens, b's first token.
    assert firsts(adv) == {"a": pytest.approx(11.0), "b": pytest.approx(48.0)}
    assert finishes(adv) == {"a": pytest.approx(48.0), "b": pytest.approx(48.0)}
    assert adv.generated_tokens == 4


def test_a_cache_hit_skips_the_chunks_it_covers() -> None:
    hashes = block_hashes(list(range(256)))
    engine = Engine(CFG)
    engine.submit(SeqRequest("x", 256, 1, 0.0, hashes))
    cold = engine.advance(90.0)
    # 100 + 100 + 56 tokens: 20 + 20 + 15.6 ms
    assert firsts(cold) == {"x": pytest.approx(55.6)}
    engine.submit(SeqRequest("y", 256, 1, 100.0, hashes))
    warm = engine.advance(1e9)
    # 15 of 16 blocks hit (at most prompt - 1 tokens): 16 tokens left, one step of 11.6 ms
    assert [a.cached_tokens for a in warm.admitted] == [240]
    assert firsts(warm) == {"y": pytest.approx(111.6)}


def test_a_partial_prefill_runs_holds_a_slot_and_can_be_cancelled() -> None:
    engine = Engine(CFG)
    engine.submit(SeqRequest("a", 250, 5, 0.0))
    engine.submit(SeqRequest("c", 10, 1, 0.0))
    engine.advance(20.0)  # a's first chunk done, its second in flight
    stats = engine.stats()
    assert (stats.running, stats.waiting, engine.progress("a")) == (1, 1, 0)
    assert stats.kv_used_tokens == 200  # the chunks scheduled so far
    assert engine.cancel("a")
    adv = engine.advance(1e9)
    # the step in flight (20-40) still runs; c is admitted after it: 40 + 10 + 1 ms
    assert firsts(adv) == {"c": pytest.approx(51.0)}
    assert engine.stats().running == 0


def test_the_budget_must_hold_every_running_decode() -> None:
    with pytest.raises(ValueError, match="max_num_batched_tokens"):
        EngineConfig(max_num_seqs=8, max_num_batched_tokens=4)
    with pytest.raises(ValueError, match="max_num_batched_tokens: must be >= max_num_seqs"):
        EngineArgs.model_validate({"model": "m", "max_num_seqs": 8, "max_num_batched_tokens": 4})


def test_the_budget_comes_from_the_spec() -> None:
    args = EngineArgs.model_validate({"model": "m", "max_num_batched_tokens": 2048})
    assert EngineConfig.from_spec(SimulatorParams(), args).max_num_batched_tokens == 2048
    assert EngineConfig().max_num_batched_tokens == EngineArgs.model_fields[
        "max_num_batched_tokens"].default == 8192
