"""A continuous-batching LLM engine simulator (pure: no I/O, no asyncio, no clock).

What it models
--------------
vLLM-style *iteration-level* scheduling. The engine runs one step at a time; every
running sequence produces exactly one output token per step. At the start of each
step the scheduler admits waiting requests in FIFO order while

* fewer than ``max_num_seqs`` sequences run, and
* the KV-cache budget has room for the request (see below).

The head of the queue blocks the ones behind it (strict FIFO, no skipping), like
vLLM's default first-come-first-served policy.

Step cost, in *simulated* milliseconds::

    step_ms = decode_ms_per_step + decode_ms_per_seq * (batch - 1)
              + prefill_ms_per_token * (prompt tokens of the sequences admitted this step)

A sequence admitted at step ``k`` gets its first token at the end of step ``k`` (its
prefill step, as with chunked prefill the prefill rides along with the decode batch)
and its ``n``-th token at the end of step ``k + n - 1``.

KV cache: admission *reserves* ``prompt + output`` tokens for the whole life of the
sequence, so a running sequence never needs to be preempted (the simulator knows the
output length up front; vLLM instead preempts and recomputes). The usage reported in
``EngineStats.kv_used_tokens`` is what running sequences actually hold: prompt plus
tokens generated so far.

Calibration
-----------
Defaults (``caravan.spec.SimulatorParams``) model a 7-8B model on one H100: 13 ms per
decode step at batch 1, so 300 output tokens take 300 * 13 ms = 3.9 s plus a few ms of
prefill, matching the reference table's ~4.1-4.2 s at concurrency 1. Each extra
sequence in the batch adds 0.08 ms per step (at batch 100 a step costs ~20.9 ms), so
latency grows gently with load the way memory-bound decoding does.

Time
----
All times are simulated milliseconds supplied by the caller through ``advance(now_ms)``
(the injected clock). ``advance`` runs every step that *ends* at or before ``now_ms``;
a step that starts before ``now_ms`` but ends after it is started (its batch is fixed)
and completed by a later call. The result is independent of how often ``advance`` is
called: calling it once per step or once for many steps gives the same timeline.

Cost: O(1) per step plus O(log n) per admission and per finish; nothing is done per
token per sequence. Not thread-safe: one owner (the asyncio driver) calls it.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass

from caravan.spec import EngineArgs, SimulatorParams


@dataclass(frozen=True)
class EngineConfig:
    """Engine knobs. Durations in simulated milliseconds; sizes in tokens."""

    max_num_seqs: int = 256
    kv_cache_tokens: int = 200_000
    max_model_len: int = 4096
    decode_ms_per_step: float = 13.0
    decode_ms_per_seq: float = 0.08
    prefill_ms_per_token: float = 0.12

    def __post_init__(self) -> None:
        _require(self.max_num_seqs >= 1, "max_num_seqs", self.max_num_seqs, "an integer >= 1")
        _require(self.max_model_len >= 2, "max_model_len", self.max_model_len, "an integer >= 2")
        _require(
            self.kv_cache_tokens >= self.max_model_len,
            "kv_cache_tokens",
            self.kv_cache_tokens,
            f">= max_model_len ({self.max_model_len}) so one full-length request fits",
        )
        _require(
            _finite(self.decode_ms_per_step) and self.decode_ms_per_step > 0,
            "decode_ms_per_step",
            self.decode_ms_per_step,
            "a number > 0",
        )
        _require(
            _finite(self.decode_ms_per_seq) and self.decode_ms_per_seq >= 0,
            "decode_ms_per_seq",
            self.decode_ms_per_seq,
            "a number >= 0",
        )
        _require(
            _finite(self.prefill_ms_per_token) and self.prefill_ms_per_token >= 0,
            "prefill_ms_per_token",
            self.prefill_ms_per_token,
            "a number >= 0",
        )

    @classmethod
    def from_spec(
        cls,
        sim: SimulatorParams,
        engine: EngineArgs | None = None,
        max_num_seqs: int | None = None,
        kv_cache_tokens: int | None = None,
    ) -> EngineConfig:
        """Build from a model's spec sections; explicit arguments override them."""
        seqs = (
            max_num_seqs
            if max_num_seqs is not None
            else (engine.max_num_seqs if engine is not None else cls.max_num_seqs)
        )
        return cls(
            max_num_seqs=seqs,
            kv_cache_tokens=kv_cache_tokens if kv_cache_tokens is not None else sim.kv_cache_tokens,
            max_model_len=engine.max_model_len if engine is not None else cls.max_model_len,
            decode_ms_per_step=sim.decode_ms_per_step,
            decode_ms_per_seq=sim.decode_ms_per_seq,
            prefill_ms_per_token=sim.prefill_ms_per_token,
        )

    def step_ms(self, batch: int, prefill_tokens: int) -> float:
        """Duration of one step with ``batch`` running sequences (>= 1), ms."""
        return (
            self.decode_ms_per_step
            + self.decode_ms_per_seq * (batch - 1)
            + self.prefill_ms_per_token * prefill_tokens
        )


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _require(ok: bool, field: str, value: object, expected: str) -> None:
    if not ok:
        raise ValueError(f"{field}: must be {expected} (got {value!r})")


@dataclass(frozen=True)
class SeqRequest:
    """One generation request. ``output_tokens`` is the exact number to generate."""

    id: str
    prompt_tokens: int
    output_tokens: int
    arrival_ms: float


class RequestRejected(ValueError):
    """The request can never run on this engine (too long for the model / KV cache)."""


@dataclass(frozen=True)
class Admitted:
    id: str
    arrival_ms: float
    admitted_ms: float


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
    prompt_tokens: int = 0
    generated_tokens: int = 0


@dataclass(frozen=True)
class EngineStats:
    running: int
    waiting: int
    kv_used_tokens: int
    kv_reserved_tokens: int
    kv_capacity_tokens: int

    @property
    def kv_usage(self) -> float:
        """Fraction (0-1) of the KV budget held by running sequences."""
        return self.kv_used_tokens / self.kv_capacity_tokens


@dataclass
class _Seq:
    req: SeqRequest
    join_step: int

    @property
    def finish_step(self) -> int:
        return self.join_step + self.req.output_tokens - 1


@dataclass
class _Step:
    index: int
    start_ms: float
    end_ms: float
    joined: list[str]
    batch: int


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
        self._kv_reserved = 0
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
        steps = prompt = generated = 0
        while True:
            if self._step is None:
                started = self._start_step(now_ms, admitted)
                if started is None:
                    break
                prompt += started
            step = self._step
            assert step is not None
            if step.end_ms > now_ms:
                break
            generated += step.batch
            steps += 1
            self._complete_step(step, first, finished)
        return Advance(tuple(admitted), tuple(first), tuple(finished), steps, prompt, generated)

    def next_event_ms(self) -> float | None:
        """When ``advance`` next has something to do: the end of the step in flight,
        the arrival of the queue head when idle, or None when there is nothing at all."""
        if self._step is not None:
            return self._step.end_ms
        if self._running:
            return self._free_at_ms
        if self._waiting:
            return max(self._free_at_ms, self._waiting[0].arrival_ms)
        return None

    def stats(self) -> EngineStats:
        used = self._sum_prompt + len(self._running) * self._steps_done - self._sum_join
        return EngineStats(
            len(self._running),
            len(self._waiting),
            used,
            self._kv_reserved,
            self.config.kv_cache_tokens,
        )

    # -- internals --------------------------------------------------------------
    def _start_step(self, now_ms: float, admitted: list[Admitted]) -> int | None:
        """Start the next step if one is due by ``now_ms``; return its prefill tokens."""
        if self._running:
            start = self._free_at_ms
        elif self._waiting:
            start = max(self._free_at_ms, self._waiting[0].arrival_ms)
        else:
            return None
        if start > now_ms:
            return None
        joined, prefill = self._admit(start, admitted)
        if not self._running:
            return None
        batch = len(self._running)
        end = start + self.config.step_ms(batch, prefill)
        self._step = _Step(self._steps_done, start, end, joined, batch)
        return prefill

    def _admit(self, start: float, admitted: list[Admitted]) -> tuple[list[str], int]:
        cfg = self.config
        joined: list[str] = []
        prefill = 0
        while self._waiting and len(self._running) < cfg.max_num_seqs:
            head = self._waiting[0]
            need = head.prompt_tokens + head.output_tokens
            if head.arrival_ms > start or self._kv_reserved + need > cfg.kv_cache_tokens:
                break
            self._waiting.popleft()
            seq = _Seq(head, self._steps_done)
            self._running[head.id] = seq
            self._kv_reserved += need
            self._sum_prompt += head.prompt_tokens
            self._sum_join += seq.join_step
            self._order += 1
            heapq.heappush(self._finish_heap, (seq.finish_step, self._order, head.id))
            joined.append(head.id)
            prefill += head.prompt_tokens
            admitted.append(Admitted(head.id, head.arrival_ms, start))
        return joined, prefill

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
        self._kv_reserved -= seq.req.prompt_tokens + seq.req.output_tokens
        self._sum_prompt -= seq.req.prompt_tokens
        self._sum_join -= seq.join_step
