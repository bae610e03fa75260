"""``BenchConfig``: every ``caravan bench`` option, typed, validated, frozen (pure: no I/O).

``BenchConfig.from_options(url=..., concurrency="1,5,10", ...)`` takes the options as
the command line gives them (lists as comma-separated text) and raises
``ConfigError`` listing every bad option at once, each named as on the command line
(``--concurrency: 'x' is not a number``). Field names are the option names with
``_`` for ``-``; defaults are written here once (the command's flags read them).

Files the options name (``--prompts``, ``--trace``, ``--spec``, ``--api-key-file``,
TLS files) are read by ``caravan.bench.session``, not here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

from caravan.bench import arrivals
from caravan.bench.dataset import DEFAULT_LENGTHS, Lengths, PromptEntry
from caravan.bench.stats import Slo, parse_slo
from caravan.bench.workloads import Kind, TraceRecord, WorkloadSpec
from caravan.errors import ConfigError
from caravan.spec import names

_W = WorkloadSpec()  # the workload knobs' defaults
DEFAULT_REQUESTS = 100  # measured requests per level when --requests is not given

Positive = Annotated[int, Field(ge=1)]
Spread = Annotated[float, Field(ge=0.0, lt=1.0)]
PositiveSeconds = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]


class BenchConfig(BaseModel):
    """One ``caravan bench`` run. ``concurrency`` xor ``rate`` (concurrency 1 when
    neither; neither with ``workload`` trace, which replays the trace's times at
    ``trace_speedup``). ``requests``: one count for every level or one per level
    (None: 100 a level, the whole trace for a trace)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    model: str
    concurrency: tuple[int, ...] | None = None
    rate: tuple[float, ...] | None = None
    poisson: bool = True
    max_concurrency: Positive | None = None
    requests: tuple[int, ...] | None = None
    warmup: Annotated[int, Field(ge=0)] = 0
    duration: PositiveSeconds | None = None
    max_errors: Positive | None = None
    stream: bool = True
    timeout: PositiveSeconds = 120.0
    input_tokens: Positive = DEFAULT_LENGTHS.mean
    input_spread: Spread = DEFAULT_LENGTHS.spread
    output_tokens: Positive = DEFAULT_LENGTHS.mean
    output_spread: Spread = DEFAULT_LENGTHS.spread
    prompts: Path | None = None
    turns: Positive = 1
    seed: int = 0
    slo: tuple[Slo, ...] = ()
    sampling: dict[str, JsonValue] = Field(default_factory=dict)
    count_tokens: bool = True
    spec: Path | None = None
    model_header: str | None = None
    session_header: str | None = None
    out: Path = Path("bench-results")
    plot: bool = True
    progress: bool = True
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    api_key_file: Path | None = None
    api_key_header: str = names.API_KEY_HEADER
    workload: Kind = Kind.UNIQUE
    trace: Path | None = None
    trace_speedup: PositiveSeconds = 1.0
    trace_block_tokens: Positive = _W.trace_block_tokens
    prefixes: Positive = _W.prefixes
    prefix_tokens: Positive = _W.prefix_tokens
    conversations: Positive = _W.conversations
    turns_mean: Annotated[float, Field(ge=1.0)] = _W.turns_mean
    turns_max: Positive = _W.turns_max
    max_context: Positive = _W.max_context

    @classmethod
    def from_options(cls, **options: object) -> BenchConfig:
        """Validate command-line options; ConfigError lists every problem, by option."""
        try:
            return cls.model_validate(options)
        except ValidationError as exc:
            raise ConfigError("\n".join(_option_errors(exc))) from None

    @field_validator("concurrency", mode="before")
    @classmethod
    def _concurrency(cls, v: object) -> object:
        if not isinstance(v, str):
            return v
        values = arrivals.parse_values(v, "--concurrency")
        if any(x != int(x) for x in values):
            raise ValueError(f"--concurrency: values must be whole numbers, got {v!r}")
        return tuple(int(x) for x in values)

    @field_validator("rate", mode="before")
    @classmethod
    def _rate(cls, v: object) -> object:
        return arrivals.parse_values(v, "--rate") if isinstance(v, str) else v

    @field_validator("requests", mode="before")
    @classmethod
    def _requests(cls, v: object) -> object:
        if not isinstance(v, str):
            return v
        values = arrivals.parse_values(v, "--requests")
        if any(x != int(x) for x in values):
            raise ValueError(f"--requests: counts must be whole numbers, got {v!r}")
        return tuple(int(x) for x in values)

    @field_validator("slo", mode="before")
    @classmethod
    def _slo(cls, v: object) -> object:
        if isinstance(v, list | tuple) and all(isinstance(s, str) for s in v):
            return tuple(parse_slo(s) for s in v)
        return v

    @field_validator("sampling", mode="before")
    @classmethod
    def _sampling(cls, v: object) -> object:
        if not isinstance(v, str):
            return v
        try:
            parsed = json.loads(v)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--sampling: not valid JSON ({exc.msg})") from None
        if not isinstance(parsed, dict):
            raise ValueError(f"--sampling: expected a JSON object, got {v!r}")
        return parsed

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = [*self._shape_problems(), *self._workload_problems()]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _shape_problems(self) -> list[str]:
        out = []
        if self.concurrency and self.rate:
            out.append("--concurrency and --rate: give one of them, not both")
        if self.requests and len(self.requests) not in (1, self.level_count):
            out.append(f"--requests: got {len(self.requests)} counts for {self.level_count} load "
                       "levels; give one count, or one per level")
        return out

    def _workload_problems(self) -> list[str]:
        out = []
        trace = self.workload is Kind.TRACE
        if trace and self.trace is None:
            out.append("--trace: --workload trace needs --trace FILE (Mooncake JSONL)")
        if not trace and self.trace is not None:
            out.append("--trace: only with --workload trace")
        if trace and (self.concurrency or self.rate):
            out.append("--workload trace: sends at the trace's timestamps; drop --concurrency/--rate "
                       "(use --trace-speedup)")
        if trace and self.warmup:
            out.append("--warmup: not with --workload trace (the trace is replayed as recorded)")
        if self.workload is not Kind.UNIQUE and (self.prompts is not None or self.turns > 1):
            out.append(f"--prompts/--turns: only with --workload unique, not {self.workload.value}")
        if self.turns_mean > self.turns_max:
            out.append(f"--turns-mean: {self.turns_mean:g} is above --turns-max {self.turns_max}")
        return out

    @property
    def level_count(self) -> int:
        return len(self.rate or self.concurrency or (1,))

    def levels(self, trace_length: int = 0) -> tuple[arrivals.LoadLevel, ...]:
        """The load levels, in order; ``trace_length``: lines in the trace (trace only)."""
        limits = arrivals.Limits(1, self.warmup, self.duration, self.max_errors)
        shape, values = self._shape()
        cap = None if shape is arrivals.Shape.CONCURRENCY else self.max_concurrency
        counts = self.request_counts(trace_length)
        return tuple(arrivals.LoadLevel(shape, v, dataclasses.replace(limits, requests=n), cap)
                     for v, n in zip(values, counts, strict=True))

    def _shape(self) -> tuple[arrivals.Shape, tuple[float, ...]]:
        if self.workload is Kind.TRACE:
            return arrivals.Shape.TRACE, (self.trace_speedup,)
        if self.rate:
            return (arrivals.Shape.POISSON if self.poisson else arrivals.Shape.CONSTANT), self.rate
        return arrivals.Shape.CONCURRENCY, tuple(float(c) for c in self.concurrency or (1,))

    def request_counts(self, trace_length: int = 0) -> tuple[int, ...]:
        """Measured requests per level (a trace: all its lines unless --requests)."""
        default = trace_length if self.workload is Kind.TRACE else DEFAULT_REQUESTS
        counts = self.requests or (default,)
        return counts * self.level_count if len(counts) == 1 else counts

    def workload_spec(self, trace: tuple[TraceRecord, ...] = (),
                      prompts: tuple[PromptEntry, ...] = ()) -> WorkloadSpec:
        """The generator's spec, given the parsed ``--trace`` / ``--prompts`` contents."""
        return WorkloadSpec(
            kind=self.workload, input=Lengths(self.input_tokens, self.input_spread),
            output=Lengths(self.output_tokens, self.output_spread), prompts=prompts,
            prefixes=self.prefixes, prefix_tokens=self.prefix_tokens,
            conversations=self.conversations, turns_mean=self.turns_mean,
            turns_max=self.turns_max, max_context=self.max_context, trace=trace,
            trace_block_tokens=self.trace_block_tokens)

    def describe(self) -> str:
        """The workload in one line (run metadata)."""
        if self.prompts is not None:
            src = f"prompts={self.prompts}"
        else:
            src = f"synthetic in={self.input_tokens}±{self.input_spread:g}"
        text = f"{src} out={self.output_tokens}±{self.output_spread:g} turns={self.turns}"
        kind = self.workload
        if kind is Kind.SHARED_PREFIX:
            return f"shared-prefix prefixes={self.prefixes}x{self.prefix_tokens} {text}"
        if kind is Kind.MULTI_TURN:
            return (f"multi-turn conversations={self.conversations} turns~{self.turns_mean:g}"
                    f"<={self.turns_max} {text}")
        if kind is Kind.TRACE:
            return f"trace={self.trace} speedup={self.trace_speedup:g} block={self.trace_block_tokens}"
        return text


def _option_errors(exc: ValidationError) -> list[str]:
    """One line per error, naming the option (``--input-spread: ...``)."""
    lines = []
    for err in exc.errors():
        msg = str(err["msg"]).removeprefix("Value error, ")
        loc = [str(p) for p in err["loc"]]
        option = f"--{loc[0].replace('_', '-')}" if loc else ""
        if not option or msg.startswith("--"):
            lines.extend(msg.splitlines())
        elif err["type"] == "extra_forbidden":
            lines.append(f"{option}: not an option of caravan bench")
        else:
            lines.append(f"{option}: {msg} (got {_short(err.get('input'))})")
    return lines


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

