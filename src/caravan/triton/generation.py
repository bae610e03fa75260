"""One request's life on the simulated engine, as an async stream of ``Piece``s.

No Triton imports: ``caravan.triton.model`` feeds it parsed requests and turns the
pieces into responses; tests drive it directly on an event loop.

* Batching mode: the request goes to the ``EngineDriver`` (continuous batching, KV
  budget, prefill and decode costs), which reports its progress as vLLM's engine
  outputs do, streaming or not (coalesced to at most one per ``stream_interval_ms``).
  Streaming requests get a piece per output that adds tokens (the new text only), the
  last one carrying the finish reason and ``final``; non-streaming requests get one
  final piece with the whole text (the prompt prepended when asked) (C21, C22).
* Cancellation (C31) is looked at on each engine output: a streaming request then just
  stops (the model sends "Request was cancelled"); a non-streaming one ends with one
  final piece holding the text so far, finish reason None, as the backend sends it.
* Fixed mode (``fixed_ms_per_token``): no engine; the answer comes after exactly
  ``tokens x fixed_ms_per_token`` real ms, in one piece.
* A dead engine (``kill()``, e.g. when the fault file appears): every request in flight
  and every later one raises ``EngineDeadError`` with vLLM's ``EngineDeadError`` text,
  as vLLM's ``generate`` does (C27, C33).
* Prefix caching: the request's token sequence (prompt words, then the words it will
  generate; only the prompt's words when it carries images, whose placeholder tokens
  follow the text) goes to the engine as a block-hash chain
  (``caravan.simulator.kvcache.block_hashes`` over ``textgen.token_ids``), so a later
  prompt that repeats a cached prefix, or a whole earlier turn, skips its prefill.
* Metrics (C36): ``on_stats`` gets a ``Progress`` per engine output, like vLLM's
  per-iteration stats: the prompt tokens, the cached part of them and TTFT with the
  first output, the new tokens
  of each output with their mean inter-token latency, and an ``Outcome`` when the
  request finishes (not when it is cancelled or its engine dies).

Output length: ``min(max_tokens, max_model_len - prompt tokens)``, finish reason
"length" (the simulator never samples an end-of-sequence token). A prompt that leaves no
room raises ``ContractError`` with vLLM's wording.

Thread-safety: every method must run on the event loop that runs the driver.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from caravan.errors import BackendError
from caravan.simulator.driver import EngineDriver, Handle, Update
from caravan.simulator.engine import RequestRejected
from caravan.simulator.kvcache import block_hashes
from caravan.simulator.textgen import Words, count_prompt_tokens, plan_output, seed_for, token_ids
from caravan.triton.contract import IMAGE_TOKENS, ContractError, GenerateRequest, Piece

_DEAD = Update(tokens=-1, done=True)  # pushed into every handle when the engine dies
# vLLM V1 EngineDeadError's message (vllm/v1/engine/exceptions.py).
ENGINE_DEAD_MESSAGE = "EngineCore encountered an issue. See stack trace (above) for the root cause."


class EngineDeadError(BackendError, RuntimeError):
    """The engine is gone; nothing can be generated any more."""

    def __init__(self, message: str = ENGINE_DEAD_MESSAGE) -> None:
        super().__init__(message)


@dataclass(frozen=True)
class Outcome:
    """A finished request, for metrics. Times in real seconds."""

    prompt_tokens: int
    output_tokens: int
    ttft_s: float
    e2e_s: float


@dataclass(frozen=True)
class Progress:
    """One engine output of a request, for metrics (vLLM's per-iteration stats)."""

    prompt_tokens: int = 0  # the prompt, on the request's first output (its prefill); else 0
    new_tokens: int = 0
    ttft_s: float | None = None  # on the first output
    itl_s: float | None = None  # mean real seconds per token since the previous token, if any
    finished: Outcome | None = None  # on the output that finished the request
    cached_tokens: int = 0  # of ``prompt_tokens``, found in the prefix cache


StatsSink = Callable[[Progress], None]


class Generator:
    """Runs requests on ``driver`` (None: fixed mode with ``fixed_ms_per_token``)."""

    def __init__(self, driver: EngineDriver | None, max_model_len: int,
                 fixed_ms_per_token: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._driver = driver
        self._max_len = max_model_len
        self._fixed_ms = fixed_ms_per_token
        self._clock = clock
        self._live: set[Handle] = set()
        self.dead = False

    def kill(self) -> None:
        """The engine dies: requests in flight fail, later ones too. Idempotent."""
        self.dead = True
        for handle in list(self._live):
            handle.queue.put_nowait(_DEAD)
            if self._driver is not None:
                self._driver.cancel(handle)

    def check_health(self) -> None:
        """vLLM's ``check_health``: raises EngineDeadError once the engine is dead."""
        if self.dead:
            raise EngineDeadError

    async def run(self, req: GenerateRequest, on_stats: StatsSink,
                  cancelled: Callable[[], bool] = lambda: False) -> AsyncIterator[Piece]:
        """The pieces of ``req``'s answer, the last one ``final`` (none after a streaming
        request was cancelled). Raises ContractError, EngineDeadError."""
        self.check_health()
        prompt_tokens = count_prompt_tokens(req.prompt) + req.images * IMAGE_TOKENS
        room = self._max_len - prompt_tokens
        if room < 1:
            raise ContractError(
                f"The decoder prompt (length {prompt_tokens}) is longer than the maximum "
                f"model length of {self._max_len}.")
        plan = plan_output(seed_for(req.prompt, req.sampling.seed), req.sampling.max_tokens, 1, room)
        words = Words(seed_for(req.prompt, req.sampling.seed), plan.output_tokens)
        if self._driver is None:
            yield await self._fixed(req, words, prompt_tokens, plan.finish_reason, on_stats)
            return
        async for piece in self._batched(req, words, prompt_tokens, plan.finish_reason, on_stats, cancelled):
            yield piece

    async def _fixed(self, req: GenerateRequest, words: Words, prompt_tokens: int, reason: str,
                     on_stats: StatsSink) -> Piece:
        start = self._clock()
        assert self._fixed_ms is not None
        await asyncio.sleep(len(words) * self._fixed_ms / 1000.0)
        took = self._clock() - start
        on_stats(Progress(prompt_tokens, len(words), ttft_s=took,
                          finished=Outcome(prompt_tokens, len(words), took, took)))
        return _piece(req, words, prompt_tokens, 0, len(words), reason, whole=True)

    async def _batched(self, req: GenerateRequest, words: Words, prompt_tokens: int, reason: str,
                       on_stats: StatsSink, cancelled: Callable[[], bool]) -> AsyncIterator[Piece]:
        assert self._driver is not None
        try:
            # Every request reports each output (vLLM's default CUMULATIVE output kind):
            # the backend checks cancellation on each, streaming or not.
            handle = self._driver.submit(prompt_tokens, len(words), streaming=True,
                                         block_hashes=_sequence_hashes(req, words))
        except RequestRejected as exc:
            raise ContractError(str(exc)) from None
        self._live.add(handle)
        try:
            sent = 0  # tokens already reported
            last_s = 0.0  # when the last reported token came
            while True:
                update = await handle.queue.get()
                if update.tokens < 0:
                    raise EngineDeadError
                if update.tokens <= sent and not update.done:
                    continue  # no new token: vLLM has no output to give
                now = self._clock()
                stats, last_s = _progress(handle, prompt_tokens, sent, update, now, last_s)
                on_stats(stats)
                if cancelled():
                    if not req.stream:  # the backend still sends the text so far, no error
                        yield _piece(req, words, prompt_tokens, 0, update.tokens,
                                     reason if update.done else None, whole=True)
                    return
                if req.stream or update.done:
                    yield _piece(req, words, prompt_tokens, sent if req.stream else 0, update.tokens,
                                 reason if update.done else None, whole=not req.stream, final=update.done)
                sent = update.tokens
                if update.done:
                    return
        finally:
            self._live.discard(handle)
            self._driver.cancel(handle)


def _progress(handle: Handle, prompt_tokens: int, sent: int, update: Update, now: float,
              last_s: float) -> tuple[Progress, float]:
    """The stats of one output (``update``, ``sent`` tokens reported before it, the last
    of them at ``last_s``), and the time of its last token (``now``)."""
    first_s = handle.first_token_s if handle.first_token_s is not None else now
    new = update.tokens - sent
    if sent == 0:  # the first output: prefill, first token, then new - 1 more
        ttft: float | None = first_s - handle.arrival_s
        gaps, last_s = new - 1, first_s
    else:
        ttft, gaps = None, new
    itl = max(now - last_s, 0.0) / gaps if gaps > 0 else None
    finished = (Outcome(prompt_tokens, update.tokens, first_s - handle.arrival_s, now - handle.arrival_s)
                if update.done else None)
    first = sent == 0
    return Progress(prompt_tokens if first else 0, new, ttft, itl, finished,
                    handle.cached_tokens if first else 0), now


def _sequence_hashes(req: GenerateRequest, words: Words) -> tuple[int, ...]:
    """The block-hash chain of the request's tokens: its prompt's words, then (without
    images) the words it generates."""
    seq = req.prompt.split()
    if not req.images:
        seq.extend(words.words())
    return block_hashes(token_ids(seq))


def _piece(req: GenerateRequest, words: Words, prompt_tokens: int, start: int, end: int,
           reason: str | None, whole: bool, final: bool = True) -> Piece:
    text = words.text(start, end)
    if whole and req.prepend_input:
        text = req.prompt + text
    return Piece(text, prompt_tokens, end - start, reason, tuple(words.text(start, end).split()),
                 total_output_tokens=end, final=final)
