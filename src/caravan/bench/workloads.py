"""Workloads for ``caravan bench`` (pure, seeded): what the requests say, not when.

API (also used by ``benchmarks/routing.py``)::

    from caravan.bench.workloads import Kind, WorkloadSpec, make_workload, take

    spec = WorkloadSpec(Kind.SHARED_PREFIX, prefixes=8, prefix_tokens=2048)
    for req in take(make_workload(spec, seed=0), 100):   # BenchRequest
        req.prompt, req.max_tokens, req.send_at_s, req.conversation, req.turn

``make_workload(spec, seed, stream=0)`` is an iterator of ``BenchRequest``: endless
for ``unique``, ``shared-prefix`` and ``multi-turn``, as long as the trace for
``trace``. The same ``(spec, seed, stream)`` always yields the same requests, in
the same order; another ``stream`` is an independent series (the runner uses one
per load level and one for warm-up, so no level re-sends another's prompts).
With the bench runner: ``run_sweep(target, model, levels, Source(spec, seed))``
(``Source.build(count, stream_id)`` gives the runner's ``RequestSpec``s; a trace's
level is ``LoadLevel(Shape.TRACE, speedup, Limits(requests=len(trace)))``).

Prompts are text that the simulated engine tokenizes deterministically: one token
per whitespace-separated word, KV blocks of 16 tokens (``caravan.simulator``,
docs/prefix-caching.md). Words come from ``dataset.WORDS``.

Kinds:

* ``unique`` (the control; today's ``caravan bench``): synthetic prompts of
  ``input`` words (or the ``--prompts`` file, cycled), nothing shared.
* ``shared-prefix``: ``prefixes`` documents (or system prompts) of ``prefix_tokens``
  words each, drawn once per seed; each request is one of them, chosen uniformly,
  followed by a unique question of ``input`` words. Every full 16-token block inside
  the prefix is shared by all requests on that prefix.
* ``multi-turn``: ``conversations`` chats at a time, round robin; turn ``t`` of a
  conversation repeats the whole history and adds a new user message of ``input``
  words, ending with the assistant tag as a chat template does (``User: ...
  Assistant:``), so prompt ``t`` starts with prompt ``t-1`` followed by its answer.
  No session header is sent: ``conversation`` only tells the runner to send turn
  ``t`` after turn ``t-1`` has finished. A finished conversation is replaced by a
  new one. The answer put in the history is the one Caravan's simulated engine
  generates for that prompt and ``max_tokens`` (its text is a pure function of the
  prompt: ``caravan.simulator.textgen``), so against the simulator the history is
  exactly what a chat client would resend and a cache hit can cover the previous
  answer too (against another server it is a deterministic stand-in, and only the
  previous prompt can hit; with a ``seed`` in ``--sampling`` the simulator's answers
  differ too). Turns per conversation: ``1 + Geometric`` with mean ``turns_mean``
  (default 3.51, ShareGPT's mean: 330,239 turns in 94,145 conversations, Zheng et
  al., "LMSYS-Chat-1M", ICLR 2024, arXiv:2309.11998, Table 1), capped at
  ``turns_max``. Only the mean is ShareGPT's; the geometric shape is our choice. A
  conversation also ends when its next turn (prompt + ``max_tokens``) would exceed
  ``max_context`` tokens (default: the simulated engine's ``max_model_len``, 4096),
  as a user whose chat is full starts a new one; no request is longer than that.
* ``trace``: replay of a Mooncake trace (``parse_trace``; format of
  kvcache-ai/Mooncake ``FAST25-release/traces/*.jsonl``: one JSON object a line,
  ``timestamp`` in ms since the first request, ``input_length`` and
  ``output_length`` in tokens, ``hash_ids`` one id per 512-token block of the
  prompt, equal ids meaning equal blocks). Block ``h`` becomes ``trace_block_tokens``
  words drawn from SHAKE-128 of the seed and ``h`` (the same for every request that
  names ``h``); a prompt is its
  blocks' words cut to ``input_length * trace_block_tokens / 512`` words (words
  for missing blocks are unique to the line). ``send_at_s`` is the timestamp in
  seconds from the first line: the runner sends open-loop at those times.
  ``trace_block_tokens`` below 512 shrinks the prompts (a multiple of 16 keeps
  shared blocks whole in the simulator's 16-token blocks).

Errors: ``WorkloadSpec`` raises ``ConfigError`` naming the field; ``parse_trace``
raises ``ConfigError`` naming ``source:line`` and the field.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import itertools
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from caravan.bench.dataset import (
    DEFAULT_LENGTHS,
    WORDS,
    Lengths,
    PromptEntry,
    RequestSpec,
    Workload,
    count_words,
    json_lines,
    synthetic_prompt,
)
from caravan.errors import ConfigError
from caravan.simulator.engine import EngineConfig
from caravan.simulator.textgen import Words, seed_for

MOONCAKE_BLOCK_TOKENS = 512  # tokens per hash id in Mooncake's traces
SHAREGPT_MEAN_TURNS = 3.51  # LMSYS-Chat-1M (arXiv:2309.11998) Table 1, ShareGPT row
SIMULATOR_MAX_MODEL_LEN = EngineConfig.max_model_len  # the simulated engine's default context


class Kind(enum.Enum):
    UNIQUE = "unique"
    SHARED_PREFIX = "shared-prefix"
    MULTI_TURN = "multi-turn"
    TRACE = "trace"


@dataclass(frozen=True)
class BenchRequest:
    """One request: ``prompt`` text, ``max_tokens``; ``send_at_s`` (trace only) is
    the send time in seconds from the start; ``conversation`` (multi-turn only)
    names the chat whose earlier ``turn`` must finish first."""

    prompt: str
    max_tokens: int
    send_at_s: float | None = None
    conversation: str = ""
    turn: int = 0


@dataclass(frozen=True)
class TraceRecord:
    """One Mooncake trace line (``timestamp`` in ms, lengths in tokens)."""

    timestamp_ms: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


@dataclass(frozen=True)
class WorkloadSpec:
    """What to generate; see the module docstring for each kind's knobs.
    ``input``/``output``: question or message words and ``max_tokens``."""

    kind: Kind = Kind.UNIQUE
    input: Lengths = DEFAULT_LENGTHS
    output: Lengths = DEFAULT_LENGTHS
    prompts: tuple[PromptEntry, ...] = field(default=())
    prefixes: int = 8
    prefix_tokens: int = 1024
    conversations: int = 64
    turns_mean: float = SHAREGPT_MEAN_TURNS
    turns_max: int = 32
    max_context: int = SIMULATOR_MAX_MODEL_LEN
    trace: tuple[TraceRecord, ...] = field(default=())
    trace_block_tokens: int = MOONCAKE_BLOCK_TOKENS

    def __post_init__(self) -> None:
        for name in ("prefixes", "prefix_tokens", "conversations", "turns_max", "max_context",
                     "trace_block_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not 1.0 <= self.turns_mean <= self.turns_max:
            raise ConfigError(
                f"turns_mean: must be in [1, turns_max={self.turns_max}], got {self.turns_mean}")
        if self.kind is Kind.TRACE and not self.trace:
            raise ConfigError("trace: the trace workload needs at least one trace record")


def make_workload(spec: WorkloadSpec, seed: int, stream: int = 0) -> Iterator[BenchRequest]:
    """The requests of ``spec`` for ``seed`` and ``stream`` (see module docstring)."""
    if spec.kind is Kind.SHARED_PREFIX:
        return _shared_prefix(spec, random.Random(f"{seed}/{stream}/shared-prefix"), seed)
    if spec.kind is Kind.MULTI_TURN:
        return _multi_turn(spec, random.Random(f"{seed}/{stream}/multi-turn"), stream)
    if spec.kind is Kind.TRACE:
        return _trace(spec, seed)
    return _unique(spec, seed, stream)


def take(requests: Iterable[BenchRequest], count: int) -> tuple[BenchRequest, ...]:
    """The first ``count`` requests (fewer when a trace is shorter)."""
    return tuple(itertools.islice(requests, count))


def _unique(spec: WorkloadSpec, seed: int, stream: int) -> Iterator[BenchRequest]:
    """Exactly ``dataset.Workload(seed, input, output, prompts).build(n, stream)``."""
    work = Workload(seed, spec.input, spec.output, spec.prompts)
    rng = random.Random(f"{seed}/{stream}")
    for i in itertools.count():
        one = work.single(i, rng)
        yield BenchRequest(one.prompt, one.max_tokens)


def shared_prefixes(spec: WorkloadSpec, seed: int) -> tuple[str, ...]:
    """The ``prefixes`` documents of ``prefix_tokens`` words (the same in every stream)."""
    rng = random.Random(f"{seed}/prefixes")
    return tuple(synthetic_prompt(spec.prefix_tokens, rng) for _ in range(spec.prefixes))


def _shared_prefix(spec: WorkloadSpec, rng: random.Random, seed: int) -> Iterator[BenchRequest]:
    docs = shared_prefixes(spec, seed)
    while True:
        doc = docs[rng.randrange(len(docs))]
        question = synthetic_prompt(spec.input.draw(rng), rng)
        yield BenchRequest(f"{doc}\nQuestion: {question}", spec.output.draw(rng))


def conversation_turns(spec: WorkloadSpec, rng: random.Random) -> int:
    """Turns of one conversation: 1 + Geometric(p = 1/turns_mean), capped at turns_max."""
    n = 1
    while n < spec.turns_max and rng.random() >= 1.0 / spec.turns_mean:
        n += 1
    return n


@dataclass
class _Chat:
    name: str
    turns: int
    history: str = ""
    turn: int = 0


def _multi_turn(spec: WorkloadSpec, rng: random.Random, stream: int) -> Iterator[BenchRequest]:
    serial = itertools.count()

    def new_chat() -> _Chat:
        return _Chat(f"{stream}-{next(serial)}", conversation_turns(spec, rng))

    chats = [new_chat() for _ in range(spec.conversations)]
    while True:
        for slot in range(len(chats)):
            chat = chats[slot]
            req = _next_turn(spec, chat, rng)
            if chat.turn > 1 and len(req.prompt.split()) + req.max_tokens > spec.max_context:
                chat = chats[slot] = new_chat()  # the context is full: the user starts afresh
                req = _next_turn(spec, chat, rng)
            yield req
            if chat.turn == chat.turns:
                chats[slot] = new_chat()


def _next_turn(spec: WorkloadSpec, chat: _Chat, rng: random.Random) -> BenchRequest:
    """The chat's next request; appends it and its answer to the chat's history."""
    prompt = f"{chat.history}User: {synthetic_prompt(spec.input.draw(rng), rng)}\nAssistant:"
    max_tokens = spec.output.draw(rng)
    req = BenchRequest(prompt, max_tokens, conversation=chat.name, turn=chat.turn)
    chat.history = f"{prompt} {' '.join(simulated_answer(prompt, max_tokens))}\n"
    chat.turn += 1
    return req


def simulated_answer(prompt: str, max_tokens: int) -> tuple[str, ...]:
    """The words Caravan's simulated engine answers to ``prompt`` with ``max_tokens``
    (no sampling seed, room in the context: its text is a pure function of these)."""
    return Words(seed_for(prompt, None), max_tokens).words()


def _trace(spec: WorkloadSpec, seed: int) -> Iterator[BenchRequest]:
    t0 = spec.trace[0].timestamp_ms
    for line, rec in enumerate(spec.trace):
        words = trace_prompt_words(rec, spec.trace_block_tokens, seed, line)
        yield BenchRequest(" ".join(words), max(1, rec.output_length),
                           send_at_s=(rec.timestamp_ms - t0) / 1000.0)


def trace_prompt_words(rec: TraceRecord, block_tokens: int, seed: int, line: int) -> list[str]:
    """The prompt's words: block ``h`` is ``block_tokens`` words seeded by ``h`` alone;
    words past the last hash id are seeded by the line; cut to the scaled length."""
    n = max(1, round(rec.input_length * block_tokens / MOONCAKE_BLOCK_TOKENS))
    words: list[str] = []
    for h in rec.hash_ids[: math.ceil(n / block_tokens)]:
        words += _block_words(seed, h, block_tokens)
    if len(words) < n:
        words += _words(f"{seed}/line/{line}", n - len(words))
    return words[:n]


@functools.lru_cache(maxsize=2048)
def _block_words(seed: int, hash_id: int, count: int) -> tuple[str, ...]:
    """The words of trace block ``hash_id`` (cached: traces reuse their shared blocks)."""
    return tuple(_words(f"{seed}/block/{hash_id}", count))


def _words(key: str, count: int) -> list[str]:
    """``count`` words drawn from SHAKE-128 of ``key`` (fast: traces need millions)."""
    return [WORDS[b % len(WORDS)] for b in hashlib.shake_128(key.encode()).digest(count)]


def parse_trace(lines: Iterable[str], source: str = "<trace>") -> tuple[TraceRecord, ...]:
    """Parse a Mooncake trace (JSONL; blank lines skipped; other fields ignored).

    ConfigError names ``source:line`` and the field: ``timestamp`` a number >= 0
    and not earlier than the line before, ``input_length`` an integer >= 1,
    ``output_length`` an integer >= 0, ``hash_ids`` a list of integers >= 0.
    """
    out: list[TraceRecord] = []
    for where, obj in json_lines(lines, source):
        rec = _trace_record(obj, where)
        if out and rec.timestamp_ms < out[-1].timestamp_ms:
            raise ConfigError(f"{where}: timestamp: {rec.timestamp_ms:g} is earlier than the "
                              f"line before ({out[-1].timestamp_ms:g}); the trace must be in time order")
        out.append(rec)
    if not out:
        raise ConfigError(f"{source}: no trace records (expected one JSON object per line)")
    return tuple(out)


def _trace_record(obj: object, where: str) -> TraceRecord:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a JSON object with timestamp, input_length, "
                          "output_length, hash_ids")
    ts = obj.get("timestamp")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not 0 <= ts < math.inf:
        raise ConfigError(f"{where}: timestamp: expected a number of ms >= 0, got {ts!r}")
    ids = obj.get("hash_ids")
    if not isinstance(ids, list) or not all(_is_int(h, 0) for h in ids):
        raise ConfigError(f"{where}: hash_ids: expected a list of integers >= 0, got {ids!r}")
    return TraceRecord(float(ts), _int_field(obj, "input_length", 1, where),
                       _int_field(obj, "output_length", 0, where), tuple(ids))


def _is_int(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _int_field(obj: dict[str, object], name: str, minimum: int, where: str) -> int:
    value = obj.get(name)
    if not _is_int(value, minimum):
        raise ConfigError(f"{where}: {name}: expected an integer >= {minimum}, got {value!r}")
    assert isinstance(value, int)
    return value


def to_specs(requests: Iterable[BenchRequest]) -> tuple[RequestSpec, ...]:
    """``RequestSpec``s for the runner, indexed in order (no session header)."""
    return tuple(
        RequestSpec(i, r.prompt, r.max_tokens, count_words(r.prompt), turn=r.turn,
                    conversation=r.conversation, send_at_s=r.send_at_s)
        for i, r in enumerate(requests))


@dataclass(frozen=True)
class Source:
    """A workload for the runner: ``build(count, stream_id)`` as ``dataset.Workload``.
    ``unique`` with ``turns > 1`` (sessions in the session header) is ``dataset``'s."""

    spec: WorkloadSpec
    seed: int = 0
    turns: int = 1

    def build(self, count: int, stream_id: int = 0) -> tuple[RequestSpec, ...]:
        if self.spec.kind is Kind.UNIQUE:
            s = self.spec
            return Workload(self.seed, s.input, s.output, s.prompts, self.turns).build(count, stream_id)
        return to_specs(take(make_workload(self.spec, self.seed, stream_id), count))
