"""``caravan validate`` refuses what Nomad refuses: at each rule's edge the accepted spec
renders jobs the Nomad fake (Nomad's ``Job.Validate``) registers, and one step past it
the spec is refused with the field's path and Nomad's rule, while the job Nomad would
have been sent is refused by the fake with Nomad's own error (HTTP 500)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nomad
import pytest
import yaml
from nomad.api import exceptions as nomad_exc
from tests.fakes.nomad import FakeNomad
from typer.testing import CliRunner

from caravan.cli import app
from caravan.nomad import jobs as nomad_jobs
from caravan.nomad.job_json import job_request
from caravan.spec import PlatformSpec, SpecError, parse_spec

MODEL = {"name": "a", "engine": {"model": "m"}}

Mutate = Callable[[PlatformSpec], PlatformSpec]


def _nomad(**over: Any) -> Mutate:
    return lambda s: s.model_copy(update={"nomad": s.nomad.model_copy(update=over)})


def _consul(**over: Any) -> Mutate:
    return lambda s: s.model_copy(update={"consul": s.consul.model_copy(update=over)})


def _name(name: str) -> Mutate:
    return lambda s: s.model_copy(update={"models": [s.models[0].model_copy(update={"name": name})]})


# (id, accepted spec, refused spec, refused path, the same step past the edge without the
# spec's check, Nomad's text for it)
EDGES: list[tuple[str, dict[str, Any], dict[str, Any], str, Mutate, str]] = [
    ("kill-timeout", {"models": [MODEL], "nomad": {"kill_timeout_s": 1500}},
     {"models": [MODEL], "nomad": {"kill_timeout_s": 1501}}, "nomad.kill_timeout_s",
     _nomad(kill_timeout_s=1501),
     "KillTimout (25m1s) longer than the group's ProgressDeadline (25m0s)"),
    ("service-name-length", {"models": [{**MODEL, "name": "m" * 56}]},
     {"models": [{**MODEL, "name": "m" * 57}]}, "models[0].name", _name("m" * 57),
     "Service name must be valid per RFC 1123"),
    ("prefix-characters", {"models": [MODEL], "consul": {"service_prefix": "vllm-"}},
     {"models": [MODEL], "consul": {"service_prefix": "vllm_"}}, "consul.service_prefix",
     _consul(service_prefix="vllm_"), "Service name must be valid per RFC 1123"),
]


@pytest.fixture
def client() -> Iterator[nomad.Nomad]:
    with FakeNomad() as fake:
        yield nomad.Nomad(address=fake.address, timeout=5)


def _register_all(client: nomad.Nomad, spec: PlatformSpec) -> None:
    for job in nomad_jobs.all_jobs(spec):
        client.jobs.register_job(job_request(job))


@pytest.mark.parametrize(("ok", "bad", "path", "mutate", "nomad_text"), [e[1:] for e in EDGES],
                         ids=[e[0] for e in EDGES])
def test_the_spec_refuses_exactly_what_nomad_refuses(
        client: nomad.Nomad, ok: dict[str, Any], bad: dict[str, Any], path: str,
        mutate: Mutate, nomad_text: str) -> None:
    accepted = parse_spec(ok)
    _register_all(client, accepted)
    with pytest.raises(SpecError) as info:
        parse_spec(bad)
    (error,) = info.value.errors
    assert error.startswith(f"{path}: ") and "Nomad" in error
    with pytest.raises(nomad_exc.BaseNomadException) as refused:
        _register_all(client, mutate(accepted))  # what Nomad would have been sent
    assert refused.value.nomad_resp.status_code == 500
    assert nomad_text in refused.value.nomad_resp.text


def test_caravan_validate_names_the_field_and_the_rule(tmp_path: Path) -> None:
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump({"models": [MODEL], "nomad": {"kill_timeout_s": 2000}}))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code != 0
    assert "nomad.kill_timeout_s: 2000 s is longer than the model groups' progress_deadline" \
        in " ".join(result.output.split())


def test_every_group_with_a_service_drains_first() -> None:
    spec = parse_spec({"models": [MODEL]})
    for job in nomad_jobs.all_jobs(spec):  # the monitoring jobs too
        for group in job.groups:
            if group.services:
                assert group.shutdown_delay_s, f"{job.id}/{group.name} has no shutdown_delay"
