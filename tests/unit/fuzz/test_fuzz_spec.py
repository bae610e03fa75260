"""Bad input: platform specs. ``parse_spec`` turns any data into a ``PlatformSpec`` or a
``SpecError`` whose every line names a field path (never another exception), and
``load_spec`` does the same for any file text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caravan.spec import PlatformSpec, SpecError, load_spec, parse_spec

leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10))
anything = st.recursive(leaf, lambda kids: st.one_of(
    st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=8), kids, max_size=3)),
    max_leaves=15)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, anything)


model = st.fixed_dictionaries({
    "name": maybe(st.sampled_from(["llama", "Bad_Name", "a" * 70, "qwen-7b", ""])),
    "engine": maybe(st.fixed_dictionaries({
        "model": maybe(st.sampled_from(["m/x", ""])),
        "tensor_parallel_size": maybe(st.integers(-1, 20)),
        "max_model_len": maybe(st.integers(0, 10**6))})),
    "replicas": maybe(st.fixed_dictionaries({"min": maybe(st.integers(-1, 5)),
                                             "max": maybe(st.integers(-1, 5)),
                                             "initial": maybe(st.integers(-1, 6))})),
    "routing": maybe(st.fixed_dictionaries({
        "maglev_table_size": maybe(st.integers(0, 70000)),
        "hash_balance_factor": maybe(st.integers(0, 300)),
        "retries": maybe(st.integers(-1, 12))})),
    "autoscaling": maybe(st.dictionaries(st.sampled_from(["checks", "cooldown_up_s", "min"]),
                                         anything, max_size=3)),
})
spec_data = st.one_of(anything, st.fixed_dictionaries(
    {"models": maybe(st.lists(model, max_size=3))},
    optional={"default_model": maybe(st.sampled_from(["llama", "nope"])),
              "envoy": maybe(st.fixed_dictionaries({"listen_port": maybe(st.integers(0, 70000)),
                                                    "admin_port": maybe(st.just(18000))})),
              "nomad": maybe(st.fixed_dictionaries({"gpus_per_node": maybe(st.integers(0, 9)),
                                                    "triton_image": maybe(st.just("triton"))})),
              "surprise": anything}))


@settings(max_examples=300, deadline=500, report_multiple_bugs=False)
@given(data=spec_data)
def test_parse_spec_gives_a_spec_or_a_spec_error(data: Any) -> None:
    """Any parsed YAML data gives a PlatformSpec or a SpecError listing each problem."""
    try:
        spec = parse_spec(data, "fuzz")
    except SpecError as err:
        assert err.errors, "a SpecError lists at least one problem"
        assert all(isinstance(e, str) and e.strip() for e in err.errors)
        assert str(err).startswith("fuzz: ")
        return
    assert isinstance(spec, PlatformSpec) and spec.models


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-spec") / "platform.yaml"


@settings(max_examples=200, deadline=500, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=200), st.sampled_from([
    "models: [", "models:\n  - name: x\n    engine: {model: m}\n  - *a", ": : :", "\t- x",
    "models: !!python/object:os.system x", "%YAML 9.9\n---\nx: 1"])))
def test_load_spec_gives_a_spec_or_a_spec_error(spec_file: Path, text: str) -> None:
    """Any file text (broken YAML, tags, anchors) gives a PlatformSpec or a SpecError."""
    spec_file.write_text(text)
    try:
        load_spec(spec_file)
    except SpecError as err:
        assert err.errors and str(spec_file) in str(err)
