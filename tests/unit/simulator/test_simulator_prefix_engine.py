"""The engine with prefix caching: prefill cost, block budget, hit statistics (hand-computed).

Default costs: 13 ms per step at batch 1, +0.08 ms per extra sequence, 0.12 ms per
prefilled (uncached) prompt token."""

from __future__ import annotations

import pytest

from caravan.simulator.engine import Engine, EngineConfig, SeqRequest
from caravan.simulator.kvcache import block_hashes

DOC = list(range(10_000, 10_100))  # a 100-token shared document


def req(rid: str, tokens: list[int], prompt: int, out: int, t: float) -> SeqRequest:
    return SeqRequest(rid, prompt, out, t, block_hashes(tokens))


def test_a_repeated_prefix_skips_its_prefill() -> None:
    engine = Engine(EngineConfig())
    engine.submit(req("a", DOC, 100, 1, 0.0))
    first = engine.advance(1_000.0)
    assert first.finished[0].t_ms == pytest.approx(13.0 + 100 * 0.12)
    assert first.cached_tokens == 0
    # same 100 tokens: cap 99 // 16 = 6 blocks = 96 cached, 4 prefilled
    engine.submit(req("b", DOC, 100, 1, 1_000.0))
    second = engine.advance(2_000.0)
    assert second.admitted[0].cached_tokens == 96
    assert (second.prompt_tokens, second.cached_tokens) == (100, 96)
    assert second.finished[0].t_ms == pytest.approx(1_000.0 + 13.0 + 4 * 0.12)
    stats = engine.stats()
    assert (stats.prefix_cache_queries, stats.prefix_cache_hits) == (200, 96)


def test_a_partial_hit_pays_for_the_rest() -> None:
    engine = Engine(EngineConfig())
    engine.submit(req("a", DOC, 100, 1, 0.0))
    engine.advance(1_000.0)
    # shares the first 40 tokens: 2 full blocks (32 tokens) hit, 68 prefilled
    other = DOC[:40] + list(range(20_000, 20_060))
    engine.submit(req("b", other, 100, 1, 1_000.0))
    adv = engine.advance(2_000.0)
    assert adv.cached_tokens == 32
    assert adv.finished[0].t_ms == pytest.approx(1_000.0 + 13.0 + 68 * 0.12)


def test_requests_admitted_together_share_the_prefill_of_the_first() -> None:
    # vLLM caches a prompt's full blocks when it schedules its prefill, so the next
    # request in the same step already hits them.
    engine = Engine(EngineConfig())
    engine.submit(req("a", DOC, 100, 2, 0.0))
    engine.submit(req("b", DOC, 100, 2, 0.0))
    adv = engine.advance(1_000.0)
    assert [a.cached_tokens for a in adv.admitted] == [0, 96]
    step1 = 13.0 + 0.08 + (100 + 4) * 0.12
    assert adv.first_tokens[0].t_ms == pytest.approx(step1)


def test_the_budget_is_in_blocks_and_shared_blocks_count_once() -> None:
    # 4 blocks of 16 tokens; "a" holds 3 (32 prompt + 16 output)
    cfg = EngineConfig(kv_cache_tokens=64, max_model_len=64, prefill_ms_per_token=0.0)
    engine = Engine(cfg)
    engine.submit(req("a", DOC[:32], 32, 16, 0.0))
    engine.submit(req("u", list(range(30_000, 30_033)), 33, 15, 0.0))  # 3 new blocks
    adv = engine.advance(0.0)
    assert [a.id for a in adv.admitted] == ["a"]  # "u" waits for blocks (FIFO)
    assert engine.stats().kv_reserved_tokens == 48
    # ... "s" behind it would fit (2 shared + 1 new) but FIFO keeps it behind "u"
    engine.submit(req("s", DOC[:33], 33, 15, 0.0))
    assert engine.advance(13.0 * 15).admitted == ()
    # "a" finishes at step 16: its 2 hashed prompt blocks stay cached, idle
    adv = engine.advance(13.0 * 16)
    assert [f.id for f in adv.finished] == ["a"]
    assert [a.id for a in adv.admitted] == ["u"]  # 2 empty blocks + 1 evicted: a's tail block
    stats = engine.stats()
    assert (stats.kv_reserved_tokens, stats.kv_cached_tokens) == (48, 16)
    # "s" now finds only a's first block; it needs 2 new blocks and 1 touched, 1 is free
    assert engine.advance(13.0 * 17).admitted == ()


def test_a_shared_prefix_is_admitted_beside_its_holder() -> None:
    cfg = EngineConfig(kv_cache_tokens=64, max_model_len=64, prefill_ms_per_token=0.0)
    engine = Engine(cfg)
    engine.submit(req("a", DOC[:32], 32, 16, 0.0))
    engine.submit(req("s", DOC[:33], 33, 15, 0.0))  # 2 blocks shared with "a" + 1 new
    adv = engine.advance(0.0)
    assert [(a.id, a.cached_tokens) for a in adv.admitted] == [("a", 0), ("s", 32)]
    assert engine.stats().kv_reserved_tokens == 64


def test_cancel_releases_blocks_and_keeps_them_cached() -> None:
    engine = Engine(EngineConfig())
    engine.submit(req("a", DOC, 100, 50, 0.0))
    engine.advance(0.0)
    assert engine.cancel("a")
    stats = engine.stats()
    assert (stats.kv_reserved_tokens, stats.kv_cached_tokens) == (0, 6 * 16)


def test_no_hashes_means_no_caching() -> None:
    engine = Engine(EngineConfig())
    for i, t in enumerate((0.0, 1_000.0)):
        engine.submit(SeqRequest(str(i), 100, 1, t))
        adv = engine.advance(t + 500.0)
        assert adv.cached_tokens == 0
        assert adv.finished[0].t_ms == pytest.approx(t + 13.0 + 12.0)
