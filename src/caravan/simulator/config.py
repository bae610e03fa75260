"""The simulated engine's knobs (pure, frozen): ``EngineConfig``.

Defaults are the spec's (``caravan.spec.EngineArgs``, ``caravan.spec.SimulatorParams``),
read from there, never restated; the model they parameterise and the calibration of
the costs are in ``caravan.simulator.engine``'s docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from caravan.simulator.kvcache import blocks_for
from caravan.spec import EngineArgs, SimulatorParams

_ENGINE, _SIM = EngineArgs.model_fields, SimulatorParams.model_fields


@dataclass(frozen=True)
class EngineConfig:
    """Engine knobs. Durations in simulated milliseconds; sizes in tokens. Defaults are
    the spec's (``EngineArgs``, ``SimulatorParams``), read from there, never restated."""

    max_num_seqs: int = _ENGINE["max_num_seqs"].default
    max_num_batched_tokens: int = _ENGINE["max_num_batched_tokens"].default
    kv_cache_tokens: int = _SIM["kv_cache_tokens"].default
    max_model_len: int = _ENGINE["max_model_len"].default
    decode_ms_per_step: float = _SIM["decode_ms_per_step"].default
    decode_ms_per_seq: float = _SIM["decode_ms_per_seq"].default
    prefill_ms_per_token: float = _SIM["prefill_ms_per_token"].default

    def __post_init__(self) -> None:
        _require(self.max_num_seqs >= 1, "max_num_seqs", self.max_num_seqs, "an integer >= 1")
        _require(
            self.max_num_batched_tokens >= self.max_num_seqs,
            "max_num_batched_tokens",
            self.max_num_batched_tokens,
            f">= max_num_seqs ({self.max_num_seqs}) so every running sequence decodes each step",
        )
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
            max_num_batched_tokens=(
                engine.max_num_batched_tokens if engine is not None
                else cls.max_num_batched_tokens),
            kv_cache_tokens=kv_cache_tokens if kv_cache_tokens is not None else sim.kv_cache_tokens,
            max_model_len=engine.max_model_len if engine is not None else cls.max_model_len,
            decode_ms_per_step=sim.decode_ms_per_step,
            decode_ms_per_seq=sim.decode_ms_per_seq,
            prefill_ms_per_token=sim.prefill_ms_per_token,
        )

    @property
    def num_blocks(self) -> int:
        """KV blocks of ``BLOCK_SIZE`` tokens: the token budget rounded up to blocks."""
        return blocks_for(self.kv_cache_tokens)

    def step_ms(self, batch: int, prefill_tokens: int) -> float:
        """Duration of one step scheduling ``batch`` sequences (>= 1) of which prefill
        chunks total ``prefill_tokens`` tokens, ms."""
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
