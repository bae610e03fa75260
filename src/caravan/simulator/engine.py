"""A continuous-batching LLM engine simulator (pure: no I/O, no asyncio, no clock).

What it models
--------------
vLLM V1's *iteration-level* scheduling with chunked prefill and a per-step token
budget (``vllm/v1/core/sched/scheduler.py``, ``Scheduler.schedule``). The engine runs
one step at a time; each step processes at most ``max_num_batched_tokens`` tokens
(vLLM's ``token_budget``), handed out in this order:

1. one decode token to every running sequence whose prompt is fully prefilled (the
   budget is validated to be >= ``max_num_seqs``, so every decode always fits);
2. the next chunk of the sequence whose prompt is partially prefilled, if any;
3. waiting requests in FIFO order, each taking a chunk of ``min(uncached prompt
   tokens, budget left)``, while budget is left, fewer than ``max_num_seqs``
   sequences run (prefilling ones included) and the KV cache has room (see below).
   The head of the queue blocks the ones behind it (strict FIFO, no skipping), like
   vLLM's default first-come-first-served policy.

vLLM schedules its ``running`` list (admission order) before its ``waiting`` queue; as
a chunk smaller than the prompt's rest only happens when it used up the budget, at most
one sequence is partially prefilled and it was admitted after every decoding one, so
the order above is vLLM's. A prompt's uncached part may span several steps; a request
whose last chunk runs in step ``k`` gets its first token at the end of step ``k`` and
its ``n``-th token at the end of step ``k + n - 1``. So long uncached prompts queue
behind each other, and a prefix-cache hit skips part of that queue.

Step cost, in *simulated* milliseconds, of the tokens the step actually processes::

    step_ms = decode_ms_per_step + decode_ms_per_seq * (scheduled - 1)
              + prefill_ms_per_token * (prefill chunk tokens in the step)

``scheduled`` counts the sequences in the step (decoding, or with a prefill chunk).
When no prompt needs more than the budget left, this is the timeline of prefilling
every admitted prompt in its admission step (the model before the budget). The default
budget, 8192 tokens, is vLLM's for its OpenAI API server on a GPU of >= 70 GiB that is
not an A100, i.e. an H100 (``vllm/engine/arg_utils.py``, ``EngineArgs.get_batch_defaults``);
it must be >= ``max_num_seqs``, as vLLM requires (``vllm/config/scheduler.py``,
``SchedulerConfig._verify_args``).

KV cache and prefix caching (``caravan.simulator.kvcache``, vLLM V1's rules with the
vLLM source files and functions cited there): memory is ``num_blocks`` blocks of 16
tokens (``kv_cache_tokens`` rounded up to whole blocks). A request's full blocks are
identified by a hash chain (``SeqRequest.block_hashes``); at admission it reuses the
longest run of cached blocks from the start of its prompt (at most ``prompt - 1``
tokens), and only the rest of the prompt is prefilled. Admission *reserves* the blocks
of ``prompt + output`` tokens for the whole life of the sequence, shared hit blocks
counting once, so a running sequence never needs to be preempted (the simulator knows
the output length up front; vLLM instead allocates as it goes, and preempts and
recomputes). A request is admitted only if the blocks it needs (new ones, plus cached
ones no running request holds) are free. Released blocks stay cached; idle cached
blocks are evicted least recently used first, only when there are no empty blocks
left. ``EngineStats.kv_used_tokens`` is what running sequences actually hold, prompt
plus tokens generated so far; ``kv_reserved_tokens`` the held blocks, in tokens.
Without ``block_hashes`` (or with prompts that share nothing) the timeline is the one of
a token budget rounded up to blocks per request: identical whenever the budget is not
what limits admission.

Calibration
-----------
Defaults (``caravan.spec.SimulatorParams``) model a 7-8B model on one H100: 13 ms per
decode step at batch 1, so 300 output tokens take 300 * 13 ms = 3.9 s plus a few ms of
prefill, matching the reference table's ~4.1-4.2 s at concurrency 1. Each extra
sequence in the batch adds 0.08 ms per step (at batch 100 a step costs ~20.9 ms), so
latency grows gently with load the way memory-bound decoding does. Prefill costs
0.12 ms per uncached prompt token (~8,300 tokens/s), so a step using the whole default
budget for prefill costs ~1 s. The per-step budget changed no constant.

Sources and bounds: the reference table (Caravan's target figures: ~4.1-4.2 s mean
response for ~300 output tokens at concurrency 1, 8B model, one H100); the H100 SXM
datasheet (NVIDIA: 3.35 TB/s HBM3, 989 TFLOPS dense BF16); Llama 3.1 8B's 8.03 B
parameters (Meta's model card), i.e. 16.1 GB of BF16 weights. Decoding is memory bound:
reading the weights once per step takes >= 16.1 GB / 3.35 TB/s = 4.8 ms, and 13 ms is
that floor times ~2.7 (kernel launch, sampling and scheduler overhead at batch 1).
Prefill is compute bound: 2 * 8.03 G FLOP per token / 989 TFLOPS = 0.016 ms per token
at full utilisation, so 0.12 ms is a conservative ~14% utilisation; it makes the
prefill that a cache hit saves, and so what prefix caching buys, if anything larger
than on a real H100 (docs/prefix-caching.md).

Time
----
All times are simulated milliseconds supplied by the caller through ``advance(now_ms)``
(the injected clock). ``advance`` runs every step that *ends* at or before ``now_ms``;
a step that starts before ``now_ms`` but ends after it is started (its batch is fixed)
and completed by a later call. The result is independent of how often ``advance`` is
called: calling it once per step or once for many steps gives the same timeline.

Cost: O(1) per step plus O(log n + blocks of the request) per admission and per finish;
nothing is done per token per sequence. Not thread-safe: one owner (the asyncio driver) calls it.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass

from caravan.errors import CaravanError
from caravan.simulator.config import EngineConfig as EngineConfig
from caravan.simulator.kvcache import BLOCK_SIZE, BlockPool, Holding


@dataclass(frozen=True)
class SeqRequest:
    """One generation request. ``output_tokens`` is the exact number to generate.

    ``block_hashes``: the prefix-cache hash chain of the full blocks of the request's
    token sequence, prompt then output (``caravan.simulator.kvcache.block_hashes``); it
    may stop early (e.g. at the first token it does not know) or be empty (no caching).
    """

    id: str
    prompt_tokens: int
    output_tokens: int
    arrival_ms: float
    block_hashes: tuple[int, ...] = ()


class RequestRejected(CaravanError, ValueError):
    """The request can never run on this engine (too long for the model / KV cache)."""


@dataclass(frozen=True)
class Admitted:
    id: str
    arrival_ms: float
    admitted_ms: float
    cached_tokens: int = 0  # prompt tokens found in the prefix cache (not prefilled)


@dataclass(frozen=True)
class FirstToken:
    id: str
    t_ms: float


@dataclass(frozen=True)
class Finished:
    id: str
    t_ms: float
    output_tokens: int


@dataclass(frozen=True)
class Advance:
    """What happened during one ``advance`` call, in simulated time order per kind."""

    admitted: tuple[Admitted, ...] = ()
    first_tokens: tuple[FirstToken, ...] = ()
    finished: tuple[Finished, ...] = ()
    steps: int = 0
    prompt_tokens: int = 0  # of the requests admitted, cached or not
    generated_tokens: int = 0
    cached_tokens: int = 0  # of ``prompt_tokens``, found in the prefix cache


@dataclass(frozen=True)
class EngineStats:
    """``kv_used_tokens``: prompt plus generated tokens of running sequences (a shared
    prefix counts once per sequence); ``kv_reserved_tokens``: blocks held by running
    sequences, in tokens; ``kv_cached_tokens``: idle cached blocks (evictable), in
    tokens; ``prefix_cache_queries`` / ``prefix_cache_hits``: cumulative prompt tokens
    looked up / found at admission (vLLM's ``PrefixCacheStats``)."""

    running: int
    waiting: int
    kv_used_tokens: int
    kv_reserved_tokens: int
    kv_capacity_tokens: int
    kv_cached_tokens: int = 0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0

    @property
    def kv_usage(self) -> float:
        """Fraction (0-1) of the KV budget held by running sequences."""
        return self.kv_used_tokens / self.kv_capacity_tokens


@dataclass
class _Seq:
    req: SeqRequest
    join_step: int
    holding: Holding

    @property
    def finish_step(self) -> int:
        return self.join_step + self.req.output_tokens - 1


@dataclass
class _Prefill:
    """The admitted request whose prompt is partially prefilled (at most one)."""

    req: SeqRequest
    holding: Holding
    done: int  # prompt tokens computed or scheduled so far, cache hits included


@dataclass
class _Step:
    index: int
    start_ms: float
    end_ms: float
    joined: list[str]  # sequences whose last prefill chunk runs in this step
    produced: int  # sequences that output a token at the end of this step


class Engine:
    """The simulator. See the module docstring for the model; times are simulated ms."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._waiting: deque[SeqRequest] = deque()
        self._ids: set[str] = set()
        self._running: dict[str, _Seq] = {}
        self._finish_heap: list[tuple[int, int, str]] = []
        self._order = 0
        self._steps_done = 0
        self._free_at_ms = -math.inf
        self._step: _Step | None = None
        self._prefill: _Prefill | None = None
        self._pool = BlockPool(config.num_blocks, BLOCK_SIZE)
        self._queries = 0
        self._hits = 0
        self._sum_prompt = 0
        self._sum_join = 0

    # -- requests ---------------------------------------------------------------
    def check(self, prompt_tokens: int, output_tokens: int) -> None:
        """Raise RequestRejected if such a request could never be scheduled."""
        cfg = self.config
        if prompt_tokens < 0 or output_tokens < 1:
            raise RequestRejected(
                "need prompt_tokens >= 0 and output_tokens >= 1 "
                f"(got {prompt_tokens}, {output_tokens})"
            )
        if prompt_tokens >= cfg.max_model_len:
            raise RequestRejected(
                f"the prompt ({prompt_tokens} tokens) leaves no room for output within the "
                f"maximum model length of {cfg.max_model_len} tokens")
        if prompt_tokens + output_tokens > cfg.max_model_len:
            raise RequestRejected(
                f"prompt ({prompt_tokens} tokens) + output ({output_tokens} tokens) exceeds "
                f"the maximum model length of {cfg.max_model_len} tokens"
            )

    def submit(self, req: SeqRequest) -> None:
        """Queue a request (FIFO). Raises RequestRejected or ValueError (duplicate id)."""
        self.check(req.prompt_tokens, req.output_tokens)
        if req.id in self._ids:
            raise ValueError(f"request id {req.id!r} is already in the engine")
        if self._waiting and req.arrival_ms < self._waiting[-1].arrival_ms:
            raise ValueError(
                "arrival_ms must not go backwards "
                f"({req.arrival_ms} < {self._waiting[-1].arrival_ms})"
            )
        self._waiting.append(req)
        self._ids.add(req.id)

    def cancel(self, request_id: str) -> bool:
        """Drop a waiting or running request (client went away). True if it was found."""
        if request_id not in self._ids:
            return False
        self._ids.discard(request_id)
        part = self._prefill
        if part is not None and part.req.id == request_id:
            self._prefill = None
            self._pool.release(part.holding, part.req.block_hashes, part.done)
            return True
        seq = self._running.pop(request_id, None)
        if seq is not None:
            self._release(seq)
            return True
        for i, w in enumerate(self._waiting):
            if w.id == request_id:
                del self._waiting[i]
                break
        return True

    def progress(self, request_id: str) -> int:
        """Output tokens generated so far for a running request; 0 if waiting or unknown."""
        seq = self._running.get(request_id)
        return 0 if seq is None else self._steps_done - seq.join_step

    # -- time -------------------------------------------------------------------
    def advance(self, now_ms: float) -> Advance:
        """Run every step that ends at or before ``now_ms``; start the next one if due."""
        admitted: list[Admitted] = []
        first: list[FirstToken] = []
        finished: list[Finished] = []
        steps = generated = 0
        queries, hits = self._queries, self._hits
        while True:
            if self._step is None and not self._start_step(now_ms, admitted):
                break
            step = self._step
            assert step is not None
            if step.end_ms > now_ms:
                break
            generated += step.produced
            steps += 1
            self._complete_step(step, first, finished)
        return Advance(tuple(admitted), tuple(first), tuple(finished), steps,
                       self._queries - queries, generated, self._hits - hits)

    def next_event_ms(self) -> float | None:
        """When ``advance`` next has something to do: the end of the step in flight,
        the arrival of the queue head when idle, or None when there is nothing at all."""
        if self._step is not None:
            return self._step.end_ms
        if self._running or self._prefill is not None:
            return self._free_at_ms
        if self._waiting:
            return max(self._free_at_ms, self._waiting[0].arrival_ms)
        return None

    def stats(self) -> EngineStats:
        used = self._sum_prompt + len(self._running) * self._steps_done - self._sum_join
        part = self._prefill
        used += 0 if part is None else part.done
        pool = self._pool
        return EngineStats(
            len(self._running) + (part is not None),
            len(self._waiting),
            used,
            pool.held * BLOCK_SIZE,
            pool.num_blocks * BLOCK_SIZE,
            pool.cached_idle * BLOCK_SIZE,
            self._queries,
            self._hits,
        )

    # -- internals --------------------------------------------------------------
    def _start_step(self, now_ms: float, admitted: list[Admitted]) -> bool:
        """Start the next step if one is due by ``now_ms``; True if one was started."""
        if self._running or self._prefill is not None:
            start = self._free_at_ms
        elif self._waiting:
            start = max(self._free_at_ms, self._waiting[0].arrival_ms)
        else:
            return False
        if start > now_ms:
            return False
        decodes = len(self._running)
        budget = self.config.max_num_batched_tokens - decodes
        joined: list[str] = []
        chunked = 0
        if self._prefill is not None:
            chunked = self._continue_prefill(budget, joined)
        before = len(admitted)
        prefill = chunked + self._admit(start, budget - chunked, joined, admitted)
        scheduled = decodes + (chunked > 0) + len(admitted) - before
        if scheduled == 0:
            return False
        end = start + self.config.step_ms(scheduled, prefill)
        self._step = _Step(self._steps_done, start, end, joined, decodes + len(joined))
        return True

    def _continue_prefill(self, budget: int, joined: list[str]) -> int:
        """Schedule the next chunk of the partially prefilled prompt; its tokens."""
        part = self._prefill
        assert part is not None
        chunk = min(part.req.prompt_tokens - part.done, budget)
        part.done += chunk
        if part.done == part.req.prompt_tokens:
            self._prefill = None
            self._join(part.req, part.holding, joined)
        return chunk

    def _admit(self, start: float, budget: int, joined: list[str],
               admitted: list[Admitted]) -> int:
        """Admit waiting requests (FIFO, head blocks) while budget is left, a slot and
        the KV blocks they need are free and no prompt is partially prefilled; return the
        prompt tokens scheduled for prefill (uncached; the last one's maybe a chunk)."""
        cfg = self.config
        pool = self._pool
        prefill = 0
        while (self._waiting and budget - prefill > 0 and self._prefill is None
               and len(self._running) < cfg.max_num_seqs):
            head = self._waiting[0]
            if head.arrival_ms > start:
                break
            found = pool.lookup(head.block_hashes, head.prompt_tokens,
                                head.prompt_tokens + head.output_tokens)
            if found.needs_free > pool.free:
                break
            self._waiting.popleft()
            holding = pool.allocate(head.block_hashes, head.prompt_tokens, found)
            cached = found.hit_blocks * BLOCK_SIZE
            self._queries += head.prompt_tokens
            self._hits += cached
            admitted.append(Admitted(head.id, head.arrival_ms, start, cached))
            chunk = min(head.prompt_tokens - cached, budget - prefill)
            prefill += chunk
            if cached + chunk == head.prompt_tokens:
                self._join(head, holding, joined)
            else:
                self._prefill = _Prefill(head, holding, cached + chunk)
        return prefill

    def _join(self, req: SeqRequest, holding: Holding, joined: list[str]) -> None:
        """Start decoding ``req`` (its last prefill chunk runs in the step being built)."""
        seq = _Seq(req, self._steps_done, holding)
        self._running[req.id] = seq
        self._sum_prompt += req.prompt_tokens
        self._sum_join += seq.join_step
        self._order += 1
        heapq.heappush(self._finish_heap, (seq.finish_step, self._order, req.id))
        joined.append(req.id)

    def _complete_step(
        self, step: _Step, first: list[FirstToken], finished: list[Finished]
    ) -> None:
        self._steps_done += 1
        self._free_at_ms = step.end_ms
        self._step = None
        first.extend(FirstToken(i, step.end_ms) for i in step.joined if i in self._running)
        heap = self._finish_heap
        while heap and heap[0][0] <= step.index:
            _, _, rid = heapq.heappop(heap)
            seq = self._running.get(rid)
            if seq is None or seq.finish_step != step.index:
                continue  # cancelled earlier
            del self._running[rid]
            self._ids.discard(rid)
            self._release(seq)
            finished.append(Finished(rid, step.end_ms, seq.req.output_tokens))

    def _release(self, seq: _Seq) -> None:
        """Give back a sequence's blocks; the full blocks of the tokens it computed (the
        last sampled token has no KV yet) stay cached."""
        generated = min(self._steps_done - seq.join_step, seq.req.output_tokens)
        computed = seq.req.prompt_tokens + max(generated - 1, 0)
        self._pool.release(seq.holding, seq.req.block_hashes, computed)
        self._sum_prompt -= seq.req.prompt_tokens
        self._sum_join -= seq.join_step
