"""Request data (pure): synthetic prompts, a JSONL prompts file, multi-turn sessions.

A ``Workload`` turns a count into a tuple of ``RequestSpec`` deterministically: the
same workload (including its seed) always yields the same requests, so two runs
send the same prompts with the same ``max_tokens`` in the same order.

Token counts of synthetic prompts are approximate: one word of the fixed
vocabulary is taken as one token (a real tokenizer is not needed to load a server).

Multi-turn sessions: session ``s`` has ``turns`` requests sharing the session id
``<prefix>-<s>`` (sent as ``x-session-id``, so Envoy's Maglev keeps a session on one
replica). Turn ``t`` repeats the whole conversation so far (earlier user turns plus a
fixed synthetic stand-in for each assistant answer, so runs stay reproducible) and
adds a new user message, so prompts grow turn by turn like a chat. Requests are
ordered turn-major (every session's turn 0, then every turn 1...); the runner sends
turn ``t`` only after turn ``t-1`` of the same session has finished.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from caravan.errors import ConfigError

_WORD_TEXT = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
    "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee "
    "zulu river mountain cloud signal engine harbor lantern meadow orbit prism quartz "
    "saddle timber velvet willow amber cobalt desert ember falcon glacier horizon"
)
WORDS = tuple(_WORD_TEXT.split())


@dataclass(frozen=True)
class RequestSpec:
    """One request to send. ``tokens_in`` is the prompt length estimate (words).
    ``session_id`` is sent in the session header; ``conversation`` (not sent) and
    ``session_id`` both make the runner send ``turn`` after the previous turn of the
    same conversation or session has finished. ``send_at_s``: the send time in
    seconds from the level's start (trace replay), else None."""

    index: int
    prompt: str
    max_tokens: int
    tokens_in: int
    session_id: str = ""
    turn: int = 0
    conversation: str = ""
    send_at_s: float | None = None

    @property
    def thread(self) -> str:
        """The conversation or session this turn belongs to ("" for none)."""
        return self.conversation or self.session_id


@dataclass(frozen=True)
class Lengths:
    """Token lengths drawn uniformly from ``[mean*(1-spread), mean*(1+spread)]``,
    at least 1. ``spread`` is a fraction in [0, 1)."""

    mean: int
    spread: float = 0.0

    def __post_init__(self) -> None:
        if self.mean < 1:
            raise ValueError(f"token length mean: must be >= 1, got {self.mean}")
        if not 0.0 <= self.spread < 1.0:
            raise ValueError(f"token length spread: must be in [0, 1), got {self.spread}")

    def draw(self, rng: random.Random) -> int:
        lo = max(1, round(self.mean * (1 - self.spread)))
        hi = max(lo, round(self.mean * (1 + self.spread)))
        return rng.randint(lo, hi)


DEFAULT_LENGTHS = Lengths(128, 0.0)  # synthetic prompt words and max_tokens by default


@dataclass(frozen=True)
class PromptEntry:
    """One line of a JSONL prompts file: ``{"prompt": "...", "max_tokens": 128}``."""

    prompt: str
    max_tokens: int | None = None


@dataclass(frozen=True)
class Workload:
    """Where prompts come from. With ``prompts`` (from a JSONL file) they are cycled
    in file order; otherwise synthetic prompts of ``input`` length are drawn. Output
    length: an entry's own ``max_tokens``, else drawn from ``output``. ``turns > 1``
    makes multi-turn sessions."""

    seed: int = 0
    input: Lengths = DEFAULT_LENGTHS
    output: Lengths = DEFAULT_LENGTHS
    prompts: tuple[PromptEntry, ...] = field(default=())
    turns: int = 1
    session_prefix: str = "s"

    def __post_init__(self) -> None:
        if self.turns < 1:
            raise ValueError(f"turns: must be >= 1, got {self.turns}")

    def build(self, count: int, stream_id: int = 0) -> tuple[RequestSpec, ...]:
        """``count`` requests. ``stream_id`` picks an independent deterministic
        series (e.g. warm-up vs measured requests, or one series per level)."""
        rng = random.Random(f"{self.seed}/{stream_id}")
        if self.turns == 1:
            return tuple(self.single(i, rng) for i in range(count))
        return self._sessions(count, rng, stream_id)

    def _prompt(self, i: int, rng: random.Random) -> tuple[str, int | None]:
        if self.prompts:
            entry = self.prompts[i % len(self.prompts)]
            return entry.prompt, entry.max_tokens
        return synthetic_prompt(self.input.draw(rng), rng), None

    def single(self, i: int, rng: random.Random) -> RequestSpec:
        """Request ``i`` of a single-turn series drawing from ``rng``."""
        prompt, max_tokens = self._prompt(i, rng)
        out = max_tokens if max_tokens is not None else self.output.draw(rng)
        return RequestSpec(i, prompt, out, count_words(prompt))

    def _sessions(self, count: int, rng: random.Random, stream_id: int) -> tuple[RequestSpec, ...]:
        n_sessions = -(-count // self.turns)
        history = [""] * n_sessions
        out: list[RequestSpec] = []
        for turn in range(self.turns):
            for s in range(n_sessions):
                if len(out) == count:
                    return tuple(out)
                message, max_tokens = self._prompt(turn * n_sessions + s, rng)
                prompt = f"{history[s]}User: {message}\n"
                tokens = max_tokens if max_tokens is not None else self.output.draw(rng)
                sid = f"{self.session_prefix}{stream_id}-{s}"
                out.append(RequestSpec(len(out), prompt, tokens, count_words(prompt), sid, turn))
                history[s] = f"{prompt}Assistant: {assistant_standin(tokens)}\n"
        return tuple(out)


def synthetic_prompt(words: int, rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def assistant_standin(tokens: int) -> str:
    """A fixed stand-in for an assistant answer of ``tokens`` tokens (deterministic)."""
    return " ".join(WORDS[i % len(WORDS)] for i in range(tokens))


def count_words(text: str) -> int:
    return len(text.split())


def json_lines(lines: Iterable[str], source: str) -> Iterator[tuple[str, Any]]:
    """Each non-blank line's ``("source:line", parsed JSON)``. ConfigError (a ValueError)
    naming ``source:line`` for a line that is not valid JSON."""
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{n}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not valid JSON ({exc.msg})") from None


def parse_jsonl(lines: Iterable[str], source: str = "<prompts>") -> tuple[PromptEntry, ...]:
    """Parse JSONL prompt lines; blank lines are skipped.

    ValueError names ``source:line`` and the bad field: each line must be an object
    with a non-empty string ``prompt`` and optional positive integer ``max_tokens``.
    """
    out = [_entry(obj, where) for where, obj in json_lines(lines, source)]
    if not out:
        raise ValueError(f"{source}: no prompts (expected one JSON object per line)")
    return tuple(out)


def _entry(obj: object, where: str) -> PromptEntry:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object like {{\"prompt\": \"...\"}}")
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"{where}: prompt: expected a non-empty string, got {prompt!r}")
    max_tokens = obj.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise ValueError(f"{where}: max_tokens: expected a positive integer, got {max_tokens!r}")
    return PromptEntry(prompt, max_tokens)


def session_order_ok(specs: Sequence[RequestSpec]) -> bool:
    """True when every session's or conversation's turns appear in increasing order
    (a runner invariant)."""
    last: dict[str, int] = {}
    for spec in specs:
        if spec.thread:
            if spec.turn != last.get(spec.thread, -1) + 1:
                return False
            last[spec.thread] = spec.turn
    return True
