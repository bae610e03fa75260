"""One request's life on the simulated engine, as an async stream of ``Piece``s.

No Triton imports: ``caravan.triton.model`` feeds it parsed requests and turns the
pieces into responses; tests drive it directly on an event loop.

* Batching mode: the request goes to the ``EngineDriver`` (continuous batching, KV
  budget, prefill and decode costs). Streaming requests get a piece per driver update
  (the new text only), the last one carrying the finish reason; non-streaming requests
  get one piece with the whole text (the prompt prepended when asked).
* Fixed mode (``fixed_ms_per_token``): no engine; the answer comes after exactly
  ``tokens x fixed_ms_per_token`` real ms, in one piece.
* A dead engine (``kill()``, e.g. when the fault file appears): every request in flight
  and every later one raises ``EngineDeadError``, as vLLM's ``generate`` does.

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

from caravan.simulator.driver import EngineDriver, Handle, Update
from caravan.simulator.engine import RequestRejected
from caravan.simulator.textgen import Words, count_prompt_tokens, plan_output, seed_for
from caravan.triton.contract import IMAGE_TOKENS, ContractError, GenerateRequest, Piece

_DEAD = Update(tokens=-1, done=True)  # pushed into every handle when the engine dies


class EngineDeadError(RuntimeError):
    """The engine is gone; nothing can be generated any more."""


@dataclass(frozen=True)
class Outcome:
    """A finished request, for metrics. Times in real seconds."""

    prompt_tokens: int
    output_tokens: int
    ttft_s: float
    e2e_s: float


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

    async def run(self, req: GenerateRequest, on_done: Callable[[Outcome], None],
                  cancelled: Callable[[], bool] = lambda: False) -> AsyncIterator[Piece]:
        """The pieces of ``req``'s answer; ``on_done`` is told once it finished.
        Raises ContractError, EngineDeadError; stops early (no error) when ``cancelled()``."""
        if self.dead:
            raise EngineDeadError("EngineDeadError: the engine died; restart the replica")
        prompt_tokens = count_prompt_tokens(req.prompt) + req.images * IMAGE_TOKENS
        room = self._max_len - prompt_tokens
        if room < 1:
            raise ContractError(
                f"The decoder prompt (length {prompt_tokens}) is longer than the maximum "
                f"model length of {self._max_len}.")
        plan = plan_output(seed_for(req.prompt, req.sampling.seed), req.sampling.max_tokens, 1, room)
        words = Words(seed_for(req.prompt, req.sampling.seed), plan.output_tokens)
        if self._driver is None:
            piece = await self._fixed(req, words, prompt_tokens, plan.finish_reason, on_done)
            yield piece
            return
        async for piece in self._batched(req, words, prompt_tokens, plan.finish_reason, on_done, cancelled):
            yield piece

    async def _fixed(self, req: GenerateRequest, words: Words, prompt_tokens: int, reason: str,
                     on_done: Callable[[Outcome], None]) -> Piece:
        start = self._clock()
        assert self._fixed_ms is not None
        await asyncio.sleep(len(words) * self._fixed_ms / 1000.0)
        took = self._clock() - start
        on_done(Outcome(prompt_tokens, len(words), took, took))
        return _piece(req, words, prompt_tokens, 0, len(words), reason, whole=True)

    async def _batched(self, req: GenerateRequest, words: Words, prompt_tokens: int, reason: str,
                       on_done: Callable[[Outcome], None], cancelled: Callable[[], bool],
                       ) -> AsyncIterator[Piece]:
        assert self._driver is not None
        try:
            handle = self._driver.submit(prompt_tokens, len(words), streaming=req.stream)
        except RequestRejected as exc:
            raise ContractError(str(exc)) from None
        self._live.add(handle)
        try:
            sent = 0
            while True:
                update = await handle.queue.get()
                if update.tokens < 0:
                    raise EngineDeadError("EngineDeadError: the engine died while generating")
                if cancelled():
                    return
                if req.stream or update.done:
                    start = sent if req.stream else 0
                    yield _piece(req, words, prompt_tokens, start, update.tokens,
                                 reason if update.done else None, whole=not req.stream)
                    sent = update.tokens
                if update.done:
                    on_done(_outcome(handle, prompt_tokens, self._clock()))
                    return
        finally:
            self._live.discard(handle)
            self._driver.cancel(handle)


def _piece(req: GenerateRequest, words: Words, prompt_tokens: int, start: int, end: int,
           reason: str | None, whole: bool) -> Piece:
    text = words.text(start, end)
    if whole and req.prepend_input:
        text = req.prompt + text
    return Piece(text, prompt_tokens, end - start, reason, tuple(words.text(start, end).split()))


def _outcome(handle: Handle, prompt_tokens: int, now: float) -> Outcome:
    first = handle.first_token_s if handle.first_token_s is not None else now
    return Outcome(prompt_tokens, handle.output_tokens, first - handle.arrival_s, now - handle.arrival_s)
