"""Platform spec validation: every error at once, each with its path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from caravan.cli import app
from caravan.observability.metric_names import VLLM_BUCKETS
from caravan.spec import (
    SLO_BUCKET_CAPS_MS,
    PlatformSpec,
    SpecError,
    is_prime,
    load_spec,
    parse_spec,
)

ROOT = Path(__file__).resolve().parents[2]
BASE: dict[str, Any] = {
    "models": [
        {"name": "llama", "engine": {"model": "meta/llama"}, "replicas": {"min": 1, "max": 3}},
        {"name": "qwen", "engine": {"model": "qwen/qwen"}},
    ]
}


def with_(path: str, value: Any) -> dict[str, Any]:
    """BASE with one value set at a dotted path (list indexes as numbers)."""
    data = copy.deepcopy(BASE)
    node: Any = data
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[int(p)] if p.isdigit() else node.setdefault(p, {})
    node[parts[-1]] = value
    return data


def errors_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return info.value.errors


BAD = [
    ("max-below-min", with_("models.1.replicas", {"min": 3, "max": 2}), "models[1].replicas.max: must be >= min (3)"),
    ("initial-out-of-range", with_("models.0.replicas", {"min": 1, "initial": 5, "max": 3}),
     "models[0].replicas.initial: must be between min (1) and max (3)"),
    ("maglev-not-prime", with_("models.0.routing", {"maglev_table_size": 65536}),
     "models[0].routing.maglev_table_size: must be a prime number"),
    ("balance-too-low", with_("models.0.routing", {"hash_balance_factor": 99}),
     "models[0].routing.hash_balance_factor: must be >= 100"),
    ("bad-name", with_("models.0.name", "Llama_3"), "models[0].name: 'Llama_3' is not a valid model name"),
    ("missing-engine-model", with_("models.1.engine", {}), "models[1].engine.model: required field is missing"),
    ("negative-tp", with_("models.0.engine.tensor_parallel_size", 0), "models[0].engine.tensor_parallel_size:"),
    ("duplicate-name", with_("models.1.name", "llama"), "models[1].name: duplicate model name 'llama'"),
    ("unknown-default", with_("default_model", "mistral"), "default_model: 'mistral' is not one of the models"),
    ("port-clash", with_("envoy", {"listen_port": 18000}), "control_plane.xds_port: port 18000 is already used"),
    ("unknown-field", with_("models.0.replicaz", 3), "models[0].replicaz: unknown field"),
    ("gpu-util-range", with_("models.0.engine.gpu_memory_utilization", 1.5),
     "models[0].engine.gpu_memory_utilization:"),
    ("ttft-slo-above-bucket-cap", with_("models.1.slo", {"ttft_ms": 12000}),
     "models[1].slo.ttft_ms: must be below 10000 (got 12000): the top bucket of "
     "vllm:time_to_first_token_seconds is 10 s"),
    ("ttft-slo-at-bucket-cap", with_("models.0.slo", {"ttft_ms": 10000}),
     "models[0].slo.ttft_ms: must be below 10000 (got 10000)"),
    ("e2e-slo-above-bucket-cap", with_("models.0.slo", {"e2e_ms": 90000}),
     "models[0].slo.e2e_ms: must be below 60000 (got 90000): the top bucket of "
     "vllm:e2e_request_latency_seconds is 60 s"),
]


@pytest.mark.parametrize(("data", "expected"), [(d, e) for _, d, e in BAD], ids=[i for i, _, _ in BAD])
def test_bad_spec_names_the_field(data: dict[str, Any], expected: str) -> None:
    errors = errors_of(data)
    assert any(e.startswith(expected) for e in errors), errors


def test_every_error_is_reported_at_once() -> None:
    data = with_("models.1.replicas", {"min": 3, "max": 2})
    data["models"][0]["routing"] = {"maglev_table_size": 100}
    data["models"].append({"name": "llama", "engine": {"model": "x"}})
    errors = errors_of(data)
    assert len(errors) == 3, errors
    assert [e.split(":")[0] for e in errors] == [
        "models[0].routing.maglev_table_size", "models[1].replicas.max", "models[2].name"]


@pytest.mark.parametrize("data", [None, [], "models"], ids=["null", "list", "string"])
def test_root_must_be_a_mapping(data: Any) -> None:
    assert errors_of(data)[0].startswith("<root>: expected a mapping")


def test_defaults_and_derived_values() -> None:
    spec = parse_spec(BASE)
    assert isinstance(spec, PlatformSpec)
    assert spec.default.name == "llama"
    assert spec.model("qwen").cluster_name == "model-qwen"
    assert spec.model("llama").replicas.start == 1
    assert spec.model("qwen").gpus == 1
    with pytest.raises(KeyError):
        spec.model("nope")


@pytest.mark.parametrize(("n", "prime"), [(2, True), (3, True), (9, False), (65537, True), (65536, False), (1, False)],
                         ids=["2", "3", "9", "65537", "65536", "1"])
def test_is_prime(n: int, prime: bool) -> None:
    assert is_prime(n) is prime


def test_slo_just_below_the_bucket_caps_is_valid() -> None:
    slo = parse_spec(with_("models.0.slo", {"ttft_ms": 9999, "e2e_ms": 59999})).models[0].slo
    assert (slo.ttft_ms, slo.e2e_ms) == (9999, 59999)


def test_slo_caps_are_the_vllm_backends_top_buckets() -> None:
    for metric, cap_ms in SLO_BUCKET_CAPS_MS.values():
        assert VLLM_BUCKETS[metric][-1] * 1000 == cap_ms, metric


def test_example_spec_is_valid() -> None:
    spec = load_spec(ROOT / "examples" / "platform.yaml")
    assert [m.name for m in spec.models] == ["llama-3-8b", "qwen-2-vl-7b"]


def test_yaml_syntax_error_is_a_spec_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(SpecError) as info:
        load_spec(bad)
    assert info.value.errors[0].startswith("<yaml>:")


def test_cli_validate_reports_every_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - name: a\n    engine: {model: x}\n    replicas: {min: 3, max: 1}\n"
                   "  - name: a\n    engine: {model: y}\n")
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "models[0].replicas.max: must be >= min (3)" in result.output
    assert "models[1].name: duplicate model name 'a'" in result.output


def test_cli_validate_refuses_an_slo_above_its_histograms_top_bucket(tmp_path: Path) -> None:
    bad = tmp_path / "slo.yaml"
    bad.write_text("models:\n  - name: a\n    engine: {model: x}\n"
                   "    slo: {ttft_ms: 15000, e2e_ms: 120000}\n")
    result = CliRunner().invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "models[0].slo.ttft_ms: must be below 10000 (got 15000)" in result.output
    assert "models[0].slo.e2e_ms: must be below 60000 (got 120000)" in result.output


def test_cli_validate_ok() -> None:
    result = CliRunner().invoke(app, ["validate", str(ROOT / "examples" / "platform.yaml")])
    assert result.exit_code == 0, result.output
    assert "2 model(s)" in result.output
