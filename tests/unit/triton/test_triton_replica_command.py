"""``caravan replica``: the model's engine and simulator settings come from ``--spec``;
the flags left are process options, whose defaults are ``ReplicaOptions``'."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import typer

from caravan.spec import load_spec
from caravan.triton.commands import _model, replica
from caravan.triton.launcher import ReplicaOptions

ROOT = Path(__file__).resolve().parents[3]
SPEC = ROOT / "examples" / "platform.yaml"


def test_the_model_comes_from_the_spec() -> None:
    spec = load_spec(SPEC)
    name = spec.models[-1].name
    assert _model(SPEC, name) == spec.model(name)


def test_a_model_not_in_the_spec_names_the_flag() -> None:
    with pytest.raises(typer.BadParameter) as info:
        _model(SPEC, "nope")
    assert info.value.param_hint == "'--model'" and "'nope' is not a model of" in str(info.value)


def test_flag_defaults_are_replica_options() -> None:
    defaults = ReplicaOptions()
    params = inspect.signature(replica).parameters
    for name in ("host", "time_scale", "stream_interval_ms", "load_delay_s",
                 "fixed_ms_per_token", "exit_timeout_s"):
        assert params[name].default.default == getattr(defaults, name), name
    spec_fields = {"max_num_seqs", "max_model_len", "kv_cache_tokens", "decode_ms_per_step"}
    assert not spec_fields & set(params), "spec fields come from --spec, not flags"
