"""vLLM-style prefix caching: hash chain, longest hit, LRU eviction, block budget.

Every expectation below is computed by hand from the rules in
``caravan.simulator.kvcache`` (16-token blocks, hit capped at prompt - 1 tokens,
tail-first freeing, empty blocks before evictions)."""

from __future__ import annotations

import pytest

from caravan.simulator.kvcache import BlockPool, Holding, Lookup, block_hashes, blocks_for
from caravan.simulator.textgen import token_ids

A = list(range(1000, 1048))  # three full blocks of distinct tokens
B = list(range(2000, 2048))


@pytest.mark.parametrize(("tokens", "blocks"), [(0, 0), (1, 1), (16, 1), (17, 2), (512, 32)])
def test_blocks_for_rounds_up(tokens: int, blocks: int) -> None:
    assert blocks_for(tokens) == blocks


def test_hash_chain_covers_full_blocks_and_every_block_before() -> None:
    assert len(block_hashes(A[:15])) == 0
    assert len(block_hashes(A[:33])) == 2
    assert block_hashes(A[:40]) == block_hashes(A[:32])  # the partial tail has no hash
    # same second block after a different first block: a different hash
    other = B[:16] + A[16:32]
    assert block_hashes(other)[1] != block_hashes(A[:32])[1]
    # a shared first block: the same first hash, whatever follows
    assert block_hashes(A[:16] + B[:16])[0] == block_hashes(A[:32])[0]


def test_hashes_are_stable_across_runs() -> None:
    # word -> CRC-32 token id; the chain is BLAKE2b, not Python's salted hash()
    assert token_ids(["the", "caravan"]) == (0x3C456DE6, 0x6282746B)
    # BLAKE2b-64 of b"caravan-none-hash" + the 16 ids as little-endian uint32 (pinned)
    assert block_hashes(list(range(16))) == (0xA688F19D88E40502,)


def admit(pool: BlockPool, tokens: list[int], prompt: int, total: int) -> tuple[Lookup, Holding]:
    hashes = block_hashes(tokens)
    found = pool.lookup(hashes, prompt, total)
    return found, pool.allocate(hashes, prompt, found)


def test_first_request_misses_and_caches_its_full_prompt_blocks() -> None:
    pool = BlockPool(10)
    found, _ = admit(pool, A[:40], prompt=40, total=48)
    assert found == Lookup(hit_blocks=0, idle=0, new_blocks=3)
    assert pool.held == 3 and pool.free == 7
    hashes = block_hashes(A[:40])
    assert all(pool.is_cached(h) for h in hashes)  # two full prompt blocks, the third is partial


def test_full_hit_partial_hit_and_the_last_token_rule() -> None:
    pool = BlockPool(20)
    _, held = admit(pool, A[:48], prompt=48, total=50)
    # a running request's blocks are shared: 40 tokens -> cap 39 // 16 = 2 blocks
    assert pool.lookup(block_hashes(A[:40]), 40, 41) == Lookup(2, 0, 1)
    # partial hit: only the first block matches
    assert pool.lookup(block_hashes(A[:16] + B[:24]), 40, 41) == Lookup(1, 0, 2)
    # exactly 48 cached tokens: at most 47 may hit, so 2 blocks (the last one is recomputed)
    assert pool.lookup(block_hashes(A[:48]), 48, 49) == Lookup(2, 0, 2)
    # no shared first block: nothing, even if later tokens match
    assert pool.lookup(block_hashes(B[:16] + A[16:48]), 48, 49).hit_blocks == 0
    pool.release(held, block_hashes(A[:48]), 48)
    # idle cached blocks hit too and are counted as consumed free blocks
    assert pool.lookup(block_hashes(A[:40]), 40, 41) == Lookup(2, 2, 1)


def test_shared_prefix_takes_fewer_blocks_from_the_budget() -> None:
    pool = BlockPool(4)
    admit(pool, A[:32], prompt=32, total=48)  # 3 blocks, 1 left
    alone = pool.lookup(block_hashes(B[:33]), 33, 48)  # 3 new blocks: does not fit
    assert alone.needs_free == 3 > pool.free
    shared = pool.lookup(block_hashes(A[:33]), 33, 48)  # 2 held blocks shared + 1 new
    assert shared == Lookup(2, 0, 1) and shared.needs_free == 1 == pool.free
    pool.allocate(block_hashes(A[:33]), 33, shared)
    assert pool.held == 4 and pool.free == 0


def test_idle_blocks_stay_cached_until_room_is_needed_tail_first() -> None:
    pool = BlockPool(4)
    _, held = admit(pool, A[:32], prompt=32, total=48)  # a0 a1 + 1 anonymous
    a0, a1 = block_hashes(A[:32])
    pool.release(held, block_hashes(A[:32]), 47)
    assert (pool.free, pool.cached_idle) == (4, 2)
    # B needs 3 blocks; 2 are empty, so one cached block goes: the chain's tail a1
    admit(pool, B[:32], prompt=32, total=48)
    assert pool.evictions == 1
    assert pool.is_cached(a0) and not pool.is_cached(a1)
    # A again: a partial hit on a0 only
    assert pool.lookup(block_hashes(A[:33]), 33, 34).hit_blocks == 1


def test_eviction_is_least_recently_used_and_a_hit_refreshes() -> None:
    pool = BlockPool(6)
    c = list(range(3000, 3016))
    for toks in (A[:16], B[:16], c):  # three one-block prompts, released in this order
        _, held = admit(pool, [*toks, 1], prompt=17, total=18)
        pool.release(held, block_hashes(toks), 17)
    a0, b0, c0 = (block_hashes(t)[0] for t in (A[:16], B[:16], c))
    # touch A again (a hit) and release it: A is now the most recent
    _, held = admit(pool, [*A[:16], 7], prompt=17, total=18)
    pool.release(held, block_hashes(A[:16]), 17)
    assert pool.cached_idle == 3
    # 5 new blocks: 3 empty, then evict B then C (oldest first), A survives
    admit(pool, list(range(9000, 9080)), prompt=80, total=80)
    assert (pool.is_cached(a0), pool.is_cached(b0), pool.is_cached(c0)) == (True, False, False)
    assert pool.evictions == 2


def test_release_caches_the_generated_full_blocks() -> None:
    pool = BlockPool(10)
    seq = A[:20] + B[:20]  # prompt 20 tokens, then 20 generated
    hashes = block_hashes(seq)
    found = pool.lookup(hashes, 20, 40)
    held = pool.allocate(hashes, 20, found)
    assert pool.is_cached(hashes[0]) and not pool.is_cached(hashes[1])
    pool.release(held, hashes, 20 + 19)  # the last sampled token has no KV: 39 tokens, 2 blocks
    assert pool.is_cached(hashes[1]) and pool.free == 10
    # the next turn (whole history + a question) hits both blocks
    nxt = block_hashes(seq + list(range(5000, 5010)))
    assert pool.lookup(nxt, 50, 60).hit_blocks == 2


def test_allocate_refuses_more_than_free() -> None:
    pool = BlockPool(2)
    found = pool.lookup(block_hashes(A[:32]), 32, 48)
    with pytest.raises(ValueError, match="3 free blocks needed, 2 free"):
        pool.allocate(block_hashes(A[:32]), 32, found)


def test_a_duplicate_block_stays_anonymous_and_later_blocks_still_cache() -> None:
    pool = BlockPool(20)
    first = pool.lookup(block_hashes(A[:32]), 32, 33)
    pool.release(pool.allocate(block_hashes(A[:32]), 32, first), block_hashes(A[:32]), 32)
    # the same 32 tokens again: the cap lets only a0 hit; a1 is recomputed in an
    # anonymous block, the output's full block after it is cached at release
    seq = A[:32] + B[:17]  # 32 prompt + 17 output tokens: 48 computed, 3 full blocks
    hashes = block_hashes(seq)
    found = pool.lookup(hashes, 32, 49)
    assert found == Lookup(1, 1, 3)
    held = pool.allocate(hashes, 32, found)
    assert (held.hashed, held.anon) == ([hashes[0]], 3)
    pool.release(held, hashes, 48)
    assert pool.is_cached(hashes[2]) and pool.cached_idle == 3 and pool.free == 20
