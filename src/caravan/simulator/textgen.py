"""Deterministic text for the simulator (pure).

* Prompt tokens are counted as whitespace-separated words (``len(prompt.split())``):
  no tokenizer is shipped, and words are a fair stand-in (~1.3 BPE tokens per English
  word). An empty or all-whitespace prompt therefore has 0 tokens.
* Token ids (for prefix caching): word ``w`` is token ``crc32(w.encode())``, the same
  in every process and run (``token_ids``); a generated word gets the same id as the
  same word in a later prompt, so a conversation's next turn can hit the blocks of the
  previous answer.
* Each generated token is one word from a fixed vocabulary, rendered with a leading
  space (``" word"``), so the streamed chunks concatenate to the unary text.
* Words come from ``random.Random(seed)``. The seed is the request's
  ``sampling_parameters.seed`` when given, else derived from the prompt (SHA-256), so
  the same prompt always yields the same text, like greedy decoding.
* Output length: ``max_tokens`` when given (finish reason ``length``), else a length
  drawn from the seed, uniform in [mean/2, 3*mean/2] (finish reason ``stop``), both
  capped at ``max_model_len - prompt_tokens``.
"""

from __future__ import annotations

import hashlib
import random
import zlib
from dataclasses import dataclass

_WORDS = """the of and to in is that for it as with was on be by at this are from or an
    which but not have has had were can all their more one will there been if would
    about into than other some these time only also its new two may over such after
    first most where through between many those under while each then both same much
    model token cache batch queue replica stream engine route cluster request latency
    server client signal window budget policy metric sample vector layer weight value
    river mountain garden window lantern harbor meadow canyon forest island valley
    bright quiet rapid gentle steady silver golden hidden open simple careful patient
    build carry guide watch gather listen travel wander follow shape measure balance
    morning evening summer winter journey caravan desert oasis compass horizon camel
    market bridge tower candle letter story answer question reason pattern moment"""
VOCAB: tuple[str, ...] = tuple(_WORDS.split())


def count_prompt_tokens(prompt: str) -> int:
    """Whitespace-separated words in ``prompt`` (the simulator's token count)."""
    return len(prompt.split())


def token_ids(words: list[str] | tuple[str, ...]) -> tuple[int, ...]:
    """The token ids of ``words`` (one per word, in [0, 2**32)): CRC-32 of its UTF-8."""
    return tuple(zlib.crc32(w.encode("utf-8")) for w in words)


def seed_for(prompt: str, seed: int | None) -> int:
    """The RNG seed: the explicit one, else the first 8 bytes of SHA-256(prompt)."""
    if seed is not None:
        return seed
    return int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big")


@dataclass(frozen=True)
class Plan:
    """How many tokens to generate and why generation stops."""

    output_tokens: int
    finish_reason: str  # "length" | "stop"


def plan_output(seed: int, max_tokens: int | None, mean_tokens: int, room: int) -> Plan:
    """Decide the output length. ``room`` = max_model_len - prompt tokens (>= 1)."""
    if max_tokens is not None:
        return Plan(min(max_tokens, room), "length")
    rng = random.Random(seed ^ 0x5EED)
    lo, hi = max(1, mean_tokens // 2), max(1, (3 * mean_tokens) // 2)
    n = rng.randint(lo, hi)
    return Plan(n, "stop") if n <= room else Plan(room, "length")


class Words:
    """The generated words of one request; ``text(a, b)`` renders tokens [a, b)."""

    __slots__ = ("_words",)

    def __init__(self, seed: int, n: int) -> None:
        self._words = random.Random(seed).choices(VOCAB, k=n)

    def __len__(self) -> int:
        return len(self._words)

    def words(self) -> tuple[str, ...]:
        """All the generated words, in order."""
        return tuple(self._words)

    def text(self, start: int, end: int) -> str:
        """Tokens ``start`` (inclusive) to ``end`` (exclusive), each as ``" word"``."""
        if start >= end:
            return ""
        return " " + " ".join(self._words[start:end])
