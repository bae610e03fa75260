"""The spec package's own modules: one error formatter (paths, union tags, every error at
once), cross-field checks that take defaults from the models, derived names written once,
and ``spec_document`` as the inverse of ``parse_spec``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from caravan.spec import (
    ConsulSpec,
    ControlPlaneSpec,
    EnvoySpec,
    NomadSpec,
    SpecError,
    load_spec,
    names,
    parse_spec,
    spec_document,
)
from caravan.spec.base import format_errors
from caravan.spec.cross_field import cross_field_errors
from caravan.spec.strategy_params import parse_strategy

ROOT = Path(__file__).resolve().parents[2]
MODEL = {"name": "llama", "engine": {"model": "x"}}


def _errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return info.value.errors


def test_every_error_comes_at_once_each_with_its_path() -> None:
    data = {"models": [
        {"name": "a", "engine": {"model": "x", "max_model_len": 1}, "replicaz": 1},
        {"name": "b", "engine": {}, "autoscaling": {"checks": [
            {"name": "c", "signal": "llm_demand", "strategy": {"name": "latency-slo",
                                                              "params": {"slo_s": -1}}}]}},
    ], "envoy": {"listen_port": 0}}
    assert _errors(data) == [
        "models[0].engine.max_model_len: must be >= 16 (got 1)",
        "models[0].replicaz: unknown field",
        "models[1].engine.model: required field is missing",
        "models[1].autoscaling.checks[0].strategy.params.slo_s: must be > 0.0 (got -1)",
        "envoy.listen_port: must be >= 1 (got 0)",
    ]


@pytest.mark.parametrize(("strategy", "line"), [
    ({"name": "threshold", "params": {"lower_bound": 1, "delta": "x"}},
     "params.delta: Input should be a valid integer, unable to parse string as an integer "
     "(got 'x')"),
    ({"name": "fixed", "params": {}},
     "name: unknown 'fixed'; expected one of 'target-value', 'threshold', 'fixed-value', "
     "'pass-through', 'requests-per-replica', 'latency-slo'"),
    ({"params": {}}, "name: required field is missing"),
], ids=["member-field", "unknown-tag", "no-tag"])
def test_a_discriminated_union_error_names_the_field_not_the_tag(
        strategy: dict[str, Any], line: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_strategy(strategy)
    assert format_errors(info.value, strategy) == [line]


def test_cross_field_checks_take_defaults_from_the_models() -> None:
    listen = EnvoySpec.model_fields["listen_port"].default
    xds = ControlPlaneSpec.model_fields["xds_port"].default
    per_node = NomadSpec.model_fields["gpus_per_node"].default
    data = {"models": [{**MODEL, "engine": {"model": "x", "tensor_parallel_size": per_node + 1}}],
            "control_plane": {"admin_port": listen}}
    assert cross_field_errors(data) == [
        f"control_plane.admin_port: port {listen} is already used by envoy.listen_port",
        f"models[0].engine.tensor_parallel_size: {per_node + 1} GPUs needed on one node, but "
        f"nomad.gpus_per_node is {per_node}",
    ]
    assert xds != listen


def test_a_dumped_spec_gets_the_same_checks_as_raw_data() -> None:
    spec = parse_spec({"models": [{**MODEL, "autoscaling": {"max": 3}}]})
    assert cross_field_errors(spec.model_dump()) == []
    data = {"models": [{**MODEL, "replicas": {"min": 2, "max": 4}, "autoscaling": {"max": 1}}]}
    assert _errors(data) == ["models[0].autoscaling.max: must be >= min (2), got 1"]


def test_derived_names_are_written_once() -> None:
    spec = parse_spec({"models": [MODEL], "consul": {"service_prefix": "vllm-"}})
    m = spec.models[0]
    assert (m.cluster_name, m.nomad_job, names.NOMAD_GROUP) == ("model-llama", "triton-llama",
                                                                "triton")
    assert spec.service_name(m) == "vllm-llama"
    assert ConsulSpec.model_fields["service_prefix"].default == names.CONSUL_SERVICE_PREFIX
    assert (spec.envoy.model_header, m.routing.session_header) == (names.MODEL_HEADER,
                                                                   names.SESSION_HEADER)


def test_spec_document_is_the_inverse_of_parse_spec() -> None:
    spec = load_spec(ROOT / "examples" / "platform.yaml")
    doc = spec_document(spec)
    assert parse_spec(doc) == spec
    section = doc["models"][0]["autoscaling"]
    assert section["checks"][0]["query_window_s"] == 30  # as written, not 30.0
    assert "job" not in section  # left out, so the model's name is used
