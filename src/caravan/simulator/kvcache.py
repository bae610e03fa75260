"""vLLM's automatic prefix caching, as a pure block pool (no I/O, no clock).

The rules, from vLLM V1 (github.com/vllm-project/vllm, ``vllm/v1/core/``):

* KV memory is blocks of ``BLOCK_SIZE`` = 16 tokens (vLLM's default ``block_size``).
* Only *full* blocks are hashed; a block's hash covers its parent block's hash and its
  own token ids, so it identifies the whole prefix up to its end
  (``kv_cache_utils.py``: ``hash_block_tokens``, ``get_request_block_hasher``).
  ``block_hashes`` below builds that chain.
* A new request reuses the longest run of cached blocks from the start of its prompt,
  capped at ``prompt_tokens - 1`` tokens, so at least the last prompt token is
  recomputed to get logits; the cap applies in whole blocks, so a prompt of exactly
  ``16 k`` cached tokens hits only ``k - 1`` blocks (``kv_cache_manager.py``:
  ``KVCacheManager.get_computed_blocks``, ``max_cache_hit_length = request.num_tokens -
  1``; ``single_type_kv_cache_manager.py``: ``FullAttentionManager.find_longest_cache_hit``).
* A hit block that no running request holds is taken out of the free queue ("touched",
  ``block_pool.py``: ``BlockPool.touch``) and counts against the free blocks the
  request needs (``kv_cache_manager.py``: ``allocate_slots``).
* Blocks are reference-counted; a block no running request holds stays cached (its hash
  still resolves) in the free queue until it is reused. Eviction is least recently used
  first; the blocks of one request are freed in reverse order, so the tail of a chain
  goes before its head (``kv_cache_utils.py``: ``FreeKVCacheBlockQueue``;
  ``single_type_kv_cache_manager.py``: ``SingleTypeKVCacheManager.free``).
* The hit statistics are in tokens: queries += prompt tokens, hits += hit tokens, per
  admitted request (``kv_cache_manager.py``: ``get_computed_blocks``, ``prefix_cache_stats``).

Simplifications (documented in docs/prefix-caching.md):

* Blocks without a hash (partial blocks, blocks not yet filled) are used before any
  cached block is evicted. vLLM keeps them in the same LRU queue as cached blocks, so
  it may evict a cached block while an empty one sits behind it; at startup, and
  whenever the pool has never been full, both orders agree.
* A request's blocks become hashable at admission (its full prompt blocks, as vLLM's
  ``allocate_slots`` caches them when it schedules the prefill) and at release (the
  full blocks of what it generated, which vLLM hashes one by one as they fill).
* If a hash is already cached, a second block with the same content stays anonymous.

Cost: O(blocks of the request) per admission and per release. Hashes are ``int``.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

BLOCK_SIZE = 16
_ROOT = b"caravan-none-hash"  # vLLM's NONE_HASH: the parent of every first block
assert array("I").itemsize == 4, "token ids are packed as 32-bit words"


def blocks_for(tokens: int, block_size: int = BLOCK_SIZE) -> int:
    """Blocks needed to hold ``tokens`` tokens (ceil)."""
    return -(-tokens // block_size)


def block_hashes(token_ids: Sequence[int], block_size: int = BLOCK_SIZE) -> tuple[int, ...]:
    """The hash chain of the full blocks of ``token_ids`` (vLLM's
    ``get_request_block_hasher``): block ``i``'s hash covers block ``i - 1``'s hash and
    its own ``block_size`` token ids (ids in [0, 2**32)). A trailing partial block has
    no hash. Stable across processes (BLAKE2b, 64-bit)."""
    raw = array("I", token_ids)
    if sys.byteorder != "little":  # pragma: no cover - the same hashes on every host
        raw.byteswap()
    data, width = raw.tobytes(), 4 * block_size
    out: list[int] = []
    parent = _ROOT
    for end in range(width, len(data) + 1, width):
        parent = hashlib.blake2b(parent + data[end - width:end], digest_size=8).digest()
        out.append(int.from_bytes(parent, "little"))
    return tuple(out)


@dataclass
class Holding:
    """The blocks one running request holds: cached ones by hash (in prefix order) and
    ``anon`` blocks without a hash; ``hashed_upto`` blocks of its chain have been looked
    at (each is in ``hashed`` or, as a duplicate of a block cached elsewhere, anonymous)."""

    hashed: list[int] = field(default_factory=list)
    anon: int = 0
    hashed_upto: int = 0


@dataclass(frozen=True)
class Lookup:
    """The result of ``BlockPool.lookup``: ``hit_blocks`` leading blocks are cached, of
    which ``idle`` no running request holds; ``new_blocks`` must come from free memory."""

    hit_blocks: int
    idle: int
    new_blocks: int

    @property
    def needs_free(self) -> int:
        """Free blocks admission consumes (new ones plus touched idle hits)."""
        return self.new_blocks + self.idle


class BlockPool:
    """``num_blocks`` blocks of ``block_size`` tokens with prefix caching.

    Invariant: ``held + free == num_blocks`` where ``held`` counts distinct blocks that
    running requests hold and ``free`` = empty blocks + idle cached blocks (``_lru``,
    front = evicted first)."""

    def __init__(self, num_blocks: int, block_size: int = BLOCK_SIZE) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1 "
                             f"(got {num_blocks}, {block_size})")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._refs: dict[int, int] = {}  # cached blocks held by running requests
        self._lru: OrderedDict[int, None] = OrderedDict()  # cached, held by nobody
        self._anon_held = 0
        self.evictions = 0

    @property
    def held(self) -> int:
        """Distinct blocks held by running requests."""
        return len(self._refs) + self._anon_held

    @property
    def free(self) -> int:
        """Blocks available to new requests (empty or idle cached)."""
        return self.num_blocks - self.held

    @property
    def cached_idle(self) -> int:
        """Cached blocks no running request holds (evictable)."""
        return len(self._lru)

    def is_cached(self, block_hash: int) -> bool:
        return block_hash in self._refs or block_hash in self._lru

    def lookup(self, hashes: Sequence[int], prompt_tokens: int, total_tokens: int) -> Lookup:
        """What admitting a request would take, without changing anything: its prompt's
        block hashes ``hashes``, ``total_tokens`` (prompt + output) to reserve."""
        cap = min(len(hashes), max(prompt_tokens - 1, 0) // self.block_size)
        hit = idle = 0
        while hit < cap:
            h = hashes[hit]
            if h in self._lru:
                idle += 1
            elif h not in self._refs:
                break
            hit += 1
        return Lookup(hit, idle, blocks_for(total_tokens, self.block_size) - hit)

    def allocate(self, hashes: Sequence[int], prompt_tokens: int, found: Lookup) -> Holding:
        """Admit a request ``lookup`` returned ``found`` for (``found.needs_free <=
        free``): touch its hit blocks, evict LRU idle blocks if empty ones run short,
        cache its full prompt blocks and return what it holds."""
        if found.needs_free > self.free:
            raise ValueError(f"{found.needs_free} free blocks needed, {self.free} free")
        holding = Holding()
        for h in hashes[:found.hit_blocks]:
            self._touch(h)
            holding.hashed.append(h)
        self._make_room(found.new_blocks)
        full = min(len(hashes), prompt_tokens // self.block_size)
        for h in hashes[found.hit_blocks:full]:
            if not self.is_cached(h):  # else a duplicate (the capped last block): anonymous
                self._refs[h] = 1
                holding.hashed.append(h)
        holding.hashed_upto = max(full, found.hit_blocks)
        holding.anon = found.new_blocks - (len(holding.hashed) - found.hit_blocks)
        self._anon_held += holding.anon
        return holding

    def release(self, holding: Holding, hashes: Sequence[int], computed_tokens: int) -> None:
        """Free a request's blocks. Its anonymous blocks that are full of computed tokens
        and have a hash in ``hashes`` (the whole sequence's chain) become cached first.
        Blocks are freed tail first (the most recent end of the LRU gets the head)."""
        full = min(len(hashes), computed_tokens // self.block_size)
        for h in hashes[holding.hashed_upto:full]:
            if holding.anon == 0:
                break
            if self.is_cached(h):
                continue  # a duplicate stays anonymous
            self._refs[h] = 1
            self._anon_held -= 1
            holding.anon -= 1
            holding.hashed.append(h)
        self._anon_held -= holding.anon
        for h in reversed(holding.hashed):
            n = self._refs[h] - 1
            if n:
                self._refs[h] = n
            else:
                del self._refs[h]
                self._lru[h] = None
        holding.hashed.clear()
        holding.anon = 0

    def _touch(self, h: int) -> None:
        """Hold a cached block one more time (taking it out of the LRU if idle)."""
        if h in self._lru:
            del self._lru[h]
            self._refs[h] = 1
        else:
            self._refs[h] += 1

    def _make_room(self, blocks: int) -> None:
        """Evict idle cached blocks (LRU first) until ``blocks`` empty blocks exist."""
        empty = self.free - len(self._lru)
        while empty < blocks:
            self._lru.popitem(last=False)
            self.evictions += 1
            empty += 1
