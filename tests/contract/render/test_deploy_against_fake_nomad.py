"""``caravan deploy`` (python-nomad adapter) against the Nomad fake on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.nomad import FakeNomad
from typer.testing import CliRunner

from caravan.cli import app
from caravan.nomad import jobs as nomad
from caravan.nomad.deploy import NomadApiError, NomadSettings, PythonNomadJobs
from caravan.spec import load_spec

SPEC = "examples/platform.yaml"
TOKEN = "acl-7f3e-very-secret"
JOB_IDS = {j.id for j in nomad.all_jobs(load_spec(SPEC))}
assert {"triton-llama-3-8b", "triton-qwen-2-vl-7b", "caravan-control-plane", "envoy"} <= JOB_IDS


@pytest.fixture
def fake() -> Iterator[FakeNomad]:
    with FakeNomad(token=TOKEN) as f:
        yield f


def _run(fake: FakeNomad, *args: str, stdin: str | None = None, token: str = TOKEN) -> Any:
    env = {"NOMAD_ADDR": fake.address, "NOMAD_TOKEN": token}
    return CliRunner().invoke(app, ["deploy", SPEC, *args], env=env, input=stdin)


def _registered(fake: FakeNomad) -> set[str]:
    return {jid for jid in JOB_IDS if fake.job(jid) is not None}


def test_dry_run_shows_plan_and_registers_nothing(fake: FakeNomad) -> None:
    result = _run(fake, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "job triton-llama-3-8b: added" in result.output
    assert "group triton: place 2" in result.output
    assert _registered(fake) == set()
    assert {r.path for r in fake.requests} == {f"/v1/job/{j}/plan" for j in JOB_IDS}


def test_yes_registers_every_job_with_the_token_never_printed(fake: FakeNomad) -> None:
    result = _run(fake, "--yes")
    assert result.exit_code == 0, result.output
    assert _registered(fake) == JOB_IDS
    assert all(r.token == TOKEN for r in fake.requests)
    assert TOKEN not in result.output
    assert "ACL token set" in result.output
    stored = fake.job("triton-llama-3-8b")
    assert stored is not None and stored["TaskGroups"][0]["Count"] == 2


def test_second_deploy_is_a_no_op(fake: FakeNomad) -> None:
    assert _run(fake, "--yes").exit_code == 0
    result = _run(fake, "--yes")
    assert result.exit_code == 0, result.output
    assert "job envoy: no changes" in result.output
    assert "nothing to register" in result.output
    assert all(fake.job(j)["Version"] == 0 for j in JOB_IDS)  # type: ignore[index]


@pytest.mark.parametrize(("answer", "registered"), [("n\n", set()), ("y\n", JOB_IDS)],
                         ids=["declined", "confirmed"])
def test_registers_only_after_confirmation(fake: FakeNomad, answer: str,
                                           registered: set[str]) -> None:
    result = _run(fake, stdin=answer)
    assert f"Register {len(JOB_IDS)} job(s)" in result.output
    assert _registered(fake) == registered
    assert result.exit_code == (0 if registered else 1)


def test_wrong_token_is_a_clear_403(fake: FakeNomad) -> None:
    result = _run(fake, "--dry-run", token="wrong")
    assert result.exit_code == 1
    assert ("job 'triton-llama-3-8b': Nomad refused it (HTTP 403): Permission denied"
            in result.output)


def test_token_file_flag(fake: FakeNomad, tmp_path: Path) -> None:
    path = tmp_path / "nomad.token"
    path.write_text(TOKEN + "\n")
    result = CliRunner().invoke(app, ["deploy", SPEC, "--dry-run", "--token-file", str(path),
                                      "--address", fake.address], env={"NOMAD_TOKEN": ""})
    assert result.exit_code == 0, result.output
    assert all(r.token == TOKEN for r in fake.requests)


def test_invalid_job_400_is_shown_naming_the_job(fake: FakeNomad) -> None:
    api = PythonNomadJobs(NomadSettings(address=fake.address, namespace="default", token=TOKEN))
    bad = {"Job": {"ID": "broken", "Name": "broken", "TaskGroups": [
        {"Name": "g", "Count": -1, "Tasks": [{"Name": "t", "Driver": "docker"}]}]}}
    with pytest.raises(NomadApiError) as info:
        api.register(bad)
    assert info.value.status == 400 and info.value.job_id == "broken"
    assert str(info.value).startswith("job 'broken': Nomad refused it (HTTP 400): 1 error occurred")
    assert "count can't be negative" in str(info.value)


def test_unreachable_nomad_is_named(tmp_path: Path) -> None:
    from caravan.local.process import free_port

    addr = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["deploy", SPEC, "--dry-run", "--address", addr,
                                      "--timeout", "2"], env={"NOMAD_TOKEN": ""})
    assert result.exit_code == 1
    assert "job 'triton-llama-3-8b': cannot reach Nomad:" in result.output
