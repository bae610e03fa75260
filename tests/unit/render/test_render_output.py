"""``caravan render --out``: atomic, confined to the directory, clean (issue 17, Deliver 6)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caravan.cli import app
from caravan.render.output import MANIFEST, OutputError, write_tree

FILES = {"jobs/triton-a.nomad.hcl": "a\n", "jobs/triton-b.nomad.hcl": "b\n",
         "jobs/envoy.nomad.hcl": "e\n", "triton_models/b/config.pbtxt": "cb\n",
         "triton_models/b/1/model.json": "{}\n", "envoy/envoy.yaml": "y\n"}


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def test_writes_every_file_and_a_manifest_and_no_temporary_file(tmp_path: Path) -> None:
    report = write_tree(tmp_path / "out", FILES)
    assert report.written == tuple(sorted(FILES)) and report.removed == report.stray == ()
    tree = _tree(tmp_path / "out")
    assert tree.pop(MANIFEST) and tree == FILES


def test_files_of_a_removed_model_are_removed_and_reported(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_tree(out, FILES)
    (out / "jobs" / "hand-written.nomad.hcl").write_text("mine\n")
    (out / "notes.txt").write_text("kept\n")
    without_b = {k: v for k, v in FILES.items() if "-b." not in k and "/b/" not in k}
    report = write_tree(out, without_b)
    assert report.removed == ("jobs/triton-b.nomad.hcl", "triton_models/b/1/model.json",
                              "triton_models/b/config.pbtxt")
    assert report.stray == ("jobs/hand-written.nomad.hcl",)
    assert not (out / "triton_models").exists()  # emptied directories go too
    assert (out / "notes.txt").read_text() == "kept\n"
    lines = report.lines(out)
    assert "removed jobs/triton-b.nomad.hcl (rendered before, no longer in the spec)" in lines
    assert any(ln.startswith("left jobs/hand-written.nomad.hcl: not written by caravan") for ln in lines)


def test_a_job_file_left_by_an_older_render_is_reported_not_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "jobs").mkdir(parents=True)
    (out / "jobs" / "triton-old.nomad.hcl").write_text("old\n")  # no manifest: not ours to delete
    report = write_tree(out, FILES)
    assert report.stray == ("jobs/triton-old.nomad.hcl",) and report.removed == ()
    assert (out / "jobs" / "triton-old.nomad.hcl").exists()


def test_a_symlinked_directory_pointing_outside_is_refused(tmp_path: Path) -> None:
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (out / "jobs").symlink_to(outside)
    with pytest.raises(OutputError, match=r"jobs is a symlink to .*outside, outside the output"):
        write_tree(out, FILES)
    assert list(outside.iterdir()) == []


def test_a_symlinked_file_is_replaced_not_written_through(tmp_path: Path) -> None:
    out, secret = tmp_path / "out", tmp_path / "authorized_keys"
    (out / "envoy").mkdir(parents=True)
    secret.write_text("do not touch\n")
    (out / "envoy" / "envoy.yaml").symlink_to(secret)
    write_tree(out, FILES)
    assert secret.read_text() == "do not touch\n"
    assert not (out / "envoy" / "envoy.yaml").is_symlink()
    assert (out / "envoy" / "envoy.yaml").read_text() == "y\n"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_tree(out, FILES)
    (out / "jobs" / "envoy.nomad.hcl").unlink()
    (out / "jobs" / "envoy.nomad.hcl").mkdir()  # a directory where a file must go
    with pytest.raises(OutputError, match=r"envoy\.nomad\.hcl"):
        write_tree(out, {**FILES, "jobs/triton-a.nomad.hcl": "new\n"})
    assert not [p for p in (out / "jobs").iterdir() if p.name.startswith(".")]
    assert (out / "jobs" / "triton-b.nomad.hcl").read_text() == "b\n"


@pytest.mark.parametrize("setup", ["file", "symlink-dir"])
def test_cli_ends_with_a_clear_error_not_a_traceback(tmp_path: Path, setup: str) -> None:
    spec = Path(__file__).resolve().parents[3] / "examples" / "platform.yaml"
    out = tmp_path / "out"
    if setup == "file":
        out.write_text("x")
        want = "exists and is not a directory"
    else:
        out.mkdir()
        os.symlink("/etc", out / "jobs")
        want = "outside the output directory; refused"
    result = CliRunner().invoke(app, ["render", str(spec), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert want in result.output and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
