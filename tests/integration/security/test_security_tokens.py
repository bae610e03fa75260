"""Audit: Consul and Nomad ACL tokens come from env or files only, and never show
up in rendered artefacts, in CLI output, or in logs of a deploy, an autoscaler
scale call or a Consul discovery run against the fakes (tests/fakes), including
their failure paths (wrong token -> 403).

Every log record, at DEBUG and from every logger (urllib3, requests, py-consul,
python-nomad included), is formatted with the project's JSON formatter (so
``extra`` fields are checked too) and searched for the tokens.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nomad
import pytest
import yaml
from prometheus_client import CollectorRegistry
from tests.fakes.consul import ConsulFake
from tests.fakes.nomad import FakeNomad
from typer.testing import CliRunner

from caravan.autoscaler.nomad import NomadScaleTarget
from caravan.cli import app
from caravan.discovery.consul import ConsulReplicaSource
from caravan.logs import JsonFormatter
from caravan.render.catalog import render_all
from caravan.spec import ConsulSpec, load_spec, parse_spec

SPEC = "examples/platform.yaml"
NOMAD_TOKEN = "nomad-acl-3b1d6f0e-token-TOP-SECRET"
CONSUL_TOKEN = "consul-acl-9c2a77e4-token-TOP-SECRET"
FILE_TOKEN = "file-acl-51aa0c3e-token-TOP-SECRET"
TOKENS = (NOMAD_TOKEN, CONSUL_TOKEN, FILE_TOKEN)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter("audit"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logs() -> Iterator[_Capture]:
    """Every record of every logger at DEBUG, restored afterwards."""
    root = logging.getLogger()
    cap, level, handlers = _Capture(), root.level, root.handlers[:]
    root.addHandler(cap)
    root.setLevel(logging.DEBUG)
    try:
        yield cap
    finally:
        root.handlers[:] = handlers  # CLI commands replace them (setup_logging)
        root.setLevel(level)


def _leaks(text: str) -> list[str]:
    return [t for t in TOKENS if t in text]


def _spec_with_token_files(tmp: Path) -> Any:
    data = yaml.safe_load(Path(SPEC).read_text())
    (tmp / "consul.token").write_text(FILE_TOKEN + "\n")
    (tmp / "nomad.token").write_text(FILE_TOKEN + "\n")
    data.setdefault("consul", {})["token_file"] = str(tmp / "consul.token")
    data.setdefault("nomad", {})["token_file"] = str(tmp / "nomad.token")
    return parse_spec(data)


def test_rendered_artefacts_hold_no_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logs: _Capture
) -> None:
    monkeypatch.setenv("NOMAD_TOKEN", NOMAD_TOKEN)
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", CONSUL_TOKEN)
    files = render_all(_spec_with_token_files(tmp_path))
    assert len(files) > 10
    leaked = {path: _leaks(text) for path, text in files.items() if _leaks(text)}
    assert leaked == {}
    # token *paths* may appear (prometheus.yml's credentials_file); values never do
    assert any("nomadVar" in t for t in files.values()), "jobs get secrets from Nomad Variables"
    out = CliRunner().invoke(app, ["render", SPEC, "--out", str(tmp_path / "out")])
    assert out.exit_code == 0, out.output
    on_disk = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert on_disk and not [p for p in on_disk if _leaks(p.read_text(errors="replace"))]
    assert _leaks("\n".join(logs.lines)) == []


@pytest.mark.parametrize(
    ("token", "exit_code"), [(NOMAD_TOKEN, 0), ("wrong-token-0000", 1)], ids=["ok", "403"]
)
def test_deploy_never_prints_or_logs_the_token(
    logs: _Capture, token: str, exit_code: int
) -> None:
    with FakeNomad(token=NOMAD_TOKEN) as fake:
        env = {"NOMAD_ADDR": fake.address, "NOMAD_TOKEN": token}
        result = CliRunner().invoke(app, ["deploy", SPEC, "--yes"], env=env)
        sent = {r.token for r in fake.requests}
    assert result.exit_code == exit_code, result.output
    assert sent == {token}, "the token from NOMAD_TOKEN is the one sent"
    # the CLI's JSON logs go to stderr, which the runner folds into ``output``
    marker = '"job registered"' if exit_code == 0 else "403"
    assert marker in result.output, result.output
    assert _leaks(result.output) == [] and token not in result.output


@pytest.mark.parametrize("token", [NOMAD_TOKEN, "wrong-token-0000"], ids=["ok", "403"])
def test_deploy_api_debug_logs_hold_no_token(logs: _Capture, token: str) -> None:
    """The deploy flow through python-nomad with every logger at DEBUG (urllib3 too)."""
    from caravan.nomad import jobs as nomad_jobs
    from caravan.nomad.deploy import NomadSettings, PythonNomadJobs, deploy
    from caravan.nomad.job_json import job_request

    spec = load_spec(SPEC)
    with FakeNomad(token=NOMAD_TOKEN) as fake:
        api = PythonNomadJobs(NomadSettings(address=fake.address, namespace="default", token=token), timeout_s=5)
        echoed: list[str] = []
        result = deploy([job_request(j) for j in nomad_jobs.all_jobs(spec)], api,
                        dry_run=False, confirm=lambda _q: True, echo=echoed.append)
    assert result.ok is (token == NOMAD_TOKEN), result
    assert any("urllib3" in line for line in logs.lines), "DEBUG logs were not captured"
    assert _leaks("\n".join(logs.lines + echoed + list(result.errors))) == []


def test_deploy_token_from_file_is_sent_not_shown(tmp_path: Path, logs: _Capture) -> None:
    (tmp_path / "t").write_text(FILE_TOKEN + "\n")
    with FakeNomad(token=FILE_TOKEN) as fake:
        env = {"NOMAD_ADDR": fake.address, "NOMAD_TOKEN": ""}
        result = CliRunner().invoke(
            app, ["deploy", SPEC, "--dry-run", "--token-file", str(tmp_path / "t")], env=env
        )
        sent = {r.token for r in fake.requests}
    assert result.exit_code == 0, result.output
    assert sent == {FILE_TOKEN}
    assert _leaks(result.output + "\n".join(logs.lines)) == []


def test_autoscaler_scale_calls_never_log_the_token(logs: _Capture) -> None:
    job = load_spec(SPEC).models[0].name
    with FakeNomad(token=NOMAD_TOKEN) as fake:
        boot = nomad.Nomad(address=fake.address, token=NOMAD_TOKEN, timeout=5)
        boot.jobs.register_job({"Job": {
            "ID": job, "Name": job, "Type": "service", "Datacenters": ["dc1"],
            "TaskGroups": [{"Name": "triton", "Count": 1,
                            "Scaling": {"Min": 0, "Max": 4, "Enabled": True},
                            "Tasks": [{"Name": "t", "Driver": "docker",
                                       "Config": {"image": "x:1"}}]}]}})
        good = NomadScaleTarget(nomad.Nomad(address=fake.address, token=NOMAD_TOKEN, timeout=5),
                                {job: (job, "triton")})
        good.scale(job, 2, "audit", {"caravan.direction": "up"})
        assert good.status(job).desired == 2
        bad = NomadScaleTarget(nomad.Nomad(address=fake.address, token="nope-0000", timeout=5),
                               {job: (job, "triton")})
        with pytest.raises(Exception) as err:
            bad.scale(job, 3, "audit", {})
    assert _leaks(str(err.value)) == []
    assert _leaks("\n".join(logs.lines)) == []


def test_consul_discovery_never_logs_the_token(logs: _Capture) -> None:
    async def scenario(fake: ConsulFake, token: str) -> None:
        spec = ConsulSpec(address=f"127.0.0.1:{fake.port}", wait_s=1, timeout_s=2)
        source = ConsulReplicaSource.from_spec(
            spec, CollectorRegistry(), env={"CONSUL_HTTP_TOKEN": token},
            rng=random.Random(1), backoff_initial_s=0.05, backoff_max_s=0.1,
        )
        it = source.updates(["llama"]).__aiter__()
        try:
            await asyncio.wait_for(it.__anext__(), 2)
        except TimeoutError:
            pass  # the wrong token never yields a set; its failures get logged
        finally:
            await it.aclose()  # type: ignore[attr-defined]

    with ConsulFake(token=CONSUL_TOKEN) as fake:
        fake.register("triton-llama", "a", address="10.0.0.1")
        asyncio.run(scenario(fake, CONSUL_TOKEN))
        asyncio.run(scenario(fake, "wrong-consul-token-0000"))
        assert {r.token for r in fake.requests} >= {CONSUL_TOKEN, "wrong-consul-token-0000"}
    text = "\n".join(logs.lines)
    assert "consul query failed" in text, "the 403 path was not exercised"
    assert _leaks(text) == []
