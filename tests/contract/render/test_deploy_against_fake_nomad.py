"""``caravan deploy`` (python-nomad adapter) against the Nomad fake on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nomad
import pytest
import yaml
from tests.fakes.nomad import FakeNomad
from typer.testing import CliRunner

from caravan.cli import app
from caravan.nomad import jobs as nomad_jobs
from caravan.nomad.deploy import NomadApiError, NomadSettings, PythonNomadJobs
from caravan.spec import load_spec

SPEC = "examples/platform.yaml"
TOKEN = "acl-7f3e-very-secret"
JOB_IDS = {j.id for j in nomad_jobs.all_jobs(load_spec(SPEC))}
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
    assert {r.path for r in fake.requests if r.method == "POST"} == {
        f"/v1/job/{j}/plan" for j in JOB_IDS}
    assert {r.path for r in fake.requests if r.method == "GET"} == {f"/v1/job/{j}" for j in JOB_IDS}


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


def test_invalid_job_500_is_shown_naming_the_job(fake: FakeNomad) -> None:
    """Nomad answers an invalid job with HTTP 500 (a plain multierror, not a coded error)."""
    api = PythonNomadJobs(NomadSettings(address=fake.address, namespace="default", token=TOKEN))
    bad = {"Job": {"ID": "broken", "Name": "broken", "Datacenters": ["dc1"], "TaskGroups": [
        {"Name": "g", "Count": -1, "Tasks": [{"Name": "t", "Driver": "docker"}]}]}}
    with pytest.raises(NomadApiError) as info:
        api.register(bad)
    assert info.value.status == 500 and info.value.job_id == "broken"
    assert str(info.value).startswith("job 'broken': Nomad refused it (HTTP 500): 1 error occurred")
    assert "Task group count can't be negative" in str(info.value)


def test_unreachable_nomad_is_named(tmp_path: Path) -> None:
    from caravan.local.process import free_port

    addr = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["deploy", SPEC, "--dry-run", "--address", addr,
                                      "--timeout", "2"], env={"NOMAD_TOKEN": ""})
    assert result.exit_code == 1
    assert "job 'triton-llama-3-8b': cannot reach Nomad:" in result.output


LLAMA = "triton-llama-3-8b"


def _image_bumped(tmp_path: Path) -> str:
    data = yaml.safe_load(Path(SPEC).read_text())
    data.setdefault("nomad", {})["triton_image"] = "nvcr.io/nvidia/tritonserver:25.02-vllm-python-py3"
    out = tmp_path / "platform.yaml"
    out.write_text(yaml.safe_dump(data))
    return str(out)


def _settle(fake: FakeNomad) -> None:
    """Let every deployment finish (replicas load instantly, min_healthy_time 30 s)."""
    for _ in range(20):
        fake.advance(31)
        if all(d["Status"] != "running" for j in JOB_IDS for d in fake.deployments(j)[:1]):
            return
    raise AssertionError("deployments still running")


def _scale(fake: FakeNomad, count: int) -> None:
    client = nomad.Nomad(address=fake.address, token=TOKEN, timeout=5)
    client.job.request(LLAMA, "scale", json={"Count": count, "Target": {"Group": "triton"}},
                       method="post")


def test_deploy_after_autoscale_keeps_the_count_and_changes_the_image(
        fake: FakeNomad, tmp_path: Path) -> None:
    """Scale to 4, change the image, deploy: the count stays 4 and the image changes."""
    assert _run(fake, "--yes").exit_code == 0
    _settle(fake)
    _scale(fake, 4)
    _settle(fake)
    env = {"NOMAD_ADDR": fake.address, "NOMAD_TOKEN": TOKEN}
    result = CliRunner().invoke(app, ["deploy", _image_bumped(tmp_path), "--yes"], env=env)
    assert result.exit_code == 0, result.output
    assert "count 4 kept from Nomad (autoscaled; the spec says 2)" in result.output
    assert ("~ task tritonserver: Config.image: nvcr.io/nvidia/tritonserver:25.01-vllm-python-py3"
            " -> nvcr.io/nvidia/tritonserver:25.02-vllm-python-py3") in result.output
    assert "Count" not in result.output
    job = fake.job(LLAMA)
    assert job is not None and job["TaskGroups"][0]["Count"] == 4
    assert job["TaskGroups"][0]["Tasks"][0]["Config"]["image"].endswith(":25.02-vllm-python-py3")
    body = [r.body for r in fake.requests if r.path == "/v1/jobs" and r.body["Job"]["ID"] == LLAMA]
    assert body[-1]["PreserveCounts"] is True and body[-1]["EnforceIndex"] is True


def test_redeploy_after_autoscale_registers_nothing(fake: FakeNomad) -> None:
    """A count-only difference on a scaled group is no change: no new version, no deployment."""
    assert _run(fake, "--yes").exit_code == 0
    _settle(fake)
    _scale(fake, 3)
    _settle(fake)
    version = fake.job(LLAMA)["Version"]  # type: ignore[index]
    result = _run(fake, "--yes")
    assert result.exit_code == 0, result.output
    assert "nothing to register: every job is up to date" in result.output
    assert fake.job(LLAMA)["Version"] == version  # type: ignore[index]
    assert fake.job(LLAMA)["TaskGroups"][0]["Count"] == 3  # type: ignore[index]


class ScaleAfterPlan(PythonNomadJobs):
    """The autoscaler scales ``LLAMA`` between the deploy's plan and its register."""

    def __init__(self, fake: FakeNomad) -> None:
        super().__init__(NomadSettings(address=fake.address, namespace="default", token=TOKEN))
        self.fake = fake

    def plan(self, request: dict[str, Any]) -> dict[str, Any]:
        answer = super().plan(request)
        if request["Job"]["ID"] == LLAMA:
            _scale(self.fake, 3)
        return answer


def test_a_scale_between_plan_and_register_is_a_conflict_and_nothing_is_registered(
        fake: FakeNomad, tmp_path: Path) -> None:
    from caravan.nomad.deploy import deploy
    from caravan.nomad.job_json import job_request

    assert _run(fake, "--yes").exit_code == 0
    _settle(fake)
    requests = [job_request(j) for j in nomad_jobs.all_jobs(load_spec(_image_bumped(tmp_path)))]
    out: list[str] = []
    result = deploy(requests, ScaleAfterPlan(fake), dry_run=False, confirm=lambda _q: True,
                    echo=out.append)
    assert not result.ok and result.registered == ()
    assert result.errors[0].startswith(
        f"job {LLAMA!r}: the job changed since the plan; run deploy again (not registered: ")
    job = fake.job(LLAMA)
    assert job is not None and job["TaskGroups"][0]["Count"] == 3
    assert job["TaskGroups"][0]["Tasks"][0]["Config"]["image"].endswith(":25.01-vllm-python-py3")
