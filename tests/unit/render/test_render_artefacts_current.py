"""The checked-in artefacts are exactly what ``caravan render examples/platform.yaml`` writes.

Fails naming the stale file; regenerate with ``caravan render examples/platform.yaml --out .``
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from caravan.cli import app

REPO = Path(__file__).resolve().parents[3]
SPEC = REPO / "examples" / "platform.yaml"
FIX = "regenerate with: caravan render examples/platform.yaml --out ."
# Directories whose every file must come from the renderers (no hand-edited leftovers).
RENDERED_ONLY = ("jobs", "envoy", "triton_models", "docker")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("render")
    result = CliRunner().invoke(app, ["render", str(SPEC), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_every_rendered_file_is_checked_in_byte_for_byte(rendered: dict[str, bytes]) -> None:
    assert any(rel.startswith("jobs/") for rel in rendered)
    for rel, data in sorted(rendered.items()):
        path = REPO / rel
        assert path.exists(), f"{rel} is missing from the repository; {FIX}"
        assert path.read_bytes() == data, f"{rel} is stale; {FIX}"


@pytest.mark.parametrize("directory", RENDERED_ONLY)
def test_no_stale_leftovers(rendered: dict[str, bytes], directory: str) -> None:
    on_disk = {p.relative_to(REPO).as_posix() for p in (REPO / directory).rglob("*") if p.is_file()}
    leftovers = sorted(on_disk - set(rendered))
    assert not leftovers, f"{leftovers} are no longer rendered: delete them ({FIX})"


def test_json_format_writes_api_jobs(tmp_path: Path) -> None:
    import json

    result = CliRunner().invoke(app, ["render", str(SPEC), "--out", str(tmp_path),
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    from caravan.nomad import jobs as nomad
    from caravan.spec import load_spec

    jobs = sorted(p.name for p in (tmp_path / "jobs").iterdir())
    assert jobs == sorted(f"{j.id}.nomad.json" for j in nomad.serving_jobs(load_spec(SPEC)))
    assert jobs == ["caravan-control-plane.nomad.json", "envoy.nomad.json",
                    "triton-llama-3-8b.nomad.json", "triton-qwen-2-vl-7b.nomad.json"]
    body = json.loads((tmp_path / "jobs" / "envoy.nomad.json").read_text())
    assert body["Job"]["ID"] == "envoy" and body["Job"]["TaskGroups"][0]["Name"] == "envoy"


def test_bad_spec_names_the_field(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("models:\n- name: a\n  engine: {model: m, tensor_parallel_size: 16}\n")
    result = CliRunner().invoke(app, ["render", str(spec), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert ("models[0].engine.tensor_parallel_size: 16 GPUs needed on one node, "
            "but nomad.gpus_per_node is 8") in result.output
    assert not (tmp_path / "out").exists()
