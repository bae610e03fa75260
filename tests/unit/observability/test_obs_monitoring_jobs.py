"""Nomad jobs for Prometheus and Grafana (job model -> HCL), pure."""

from __future__ import annotations

import json
import re
from typing import Any

import hcl2
import pytest
import yaml

from caravan.nomad import monitoring_jobs as mj
from caravan.nomad.job_hcl import job_hcl
from caravan.nomad.jobmodel import Job, Template
from caravan.observability import grafana
from caravan.spec import PlatformSpec, parse_spec

_ACTION = re.compile(r'\{\{ "((?:[^"\\]|\\.)*)" \}\}')
_ENV = re.compile(r'\{\{ env "([A-Z_]+)" \}\}')
NOMAD_ENV = {"NOMAD_DC": "dc-of-the-alloc"}


def consul_template_literals(data: str, env: dict[str, str] = NOMAD_ENV) -> str:
    """Evaluate a template made only of string-literal and ``env`` actions (as
    consul-template would, with ``env`` as the task's environment); fail on any other."""
    out = _ENV.sub(lambda m: env[m.group(1)], _ACTION.sub(lambda m: json.loads(f'"{m.group(1)}"'), data))
    left = _ENV.sub("", _ACTION.sub("", data))
    assert "{{" not in left, f"non-literal action left in {data[:80]!r}"
    return out


LITERAL_CASES = [
    ("plain", "a: b\n"),
    ("prometheus annotation", "summary: p95 of {{ $labels.model }} is high"),
    ("grafana legend", '{"legendFormat": "{{type}} {{ replica }}"}'),
    ("nested braces", "{{{x}}}"),
    ("dollar braces kept", "replacement: ${1}:${2}"),
]


@pytest.mark.parametrize("text", [c[1] for c in LITERAL_CASES], ids=[c[0] for c in LITERAL_CASES])
def test_template_literal_round_trips(text: str) -> None:
    assert consul_template_literals(mj.template_literal(text)) == text


def _spec(**consul: Any) -> PlatformSpec:
    return parse_spec({"models": [{"name": "a", "engine": {"model": "x"}}], "consul": consul})


def _templates(job: Job) -> dict[str, Template]:
    (group,) = job.groups
    (task,) = group.tasks
    return {t.destination: t for t in task.templates}


def test_prometheus_job_ships_config_and_rules() -> None:
    job = mj.prometheus_job(_spec())
    files = _templates(job)
    assert set(files) == {
        "local/prometheus.yml",
        "local/rules/caravan-recording.yml",
        "local/rules/caravan-alerts.yml",
    }
    config = yaml.safe_load(consul_template_literals(files["local/prometheus.yml"].data))
    assert config["rule_files"] == ["rules/caravan-recording.yml", "rules/caravan-alerts.yml"]
    alerts = yaml.safe_load(consul_template_literals(files["local/rules/caravan-alerts.yml"].data))
    assert "{{ $labels.model }}" in alerts["groups"][0]["rules"][0]["annotations"]["summary"]
    (service,) = job.groups[0].services
    assert (service.name, service.checks[0].path) == ("prometheus", "/-/ready")


def test_prometheus_job_reads_consul_token_from_nomad_variables() -> None:
    files = _templates(mj.prometheus_job(_spec(token_file="/etc/consul.token")))
    assert "nomadVar" in files[mj.CONSUL_TOKEN_PATH].data
    config = yaml.safe_load(consul_template_literals(files["local/prometheus.yml"].data))
    sd = config["scrape_configs"][0]["consul_sd_configs"][0]
    assert sd["authorization"] == {"credentials_file": f"/{mj.CONSUL_TOKEN_PATH}"}


def test_prometheus_token_template_waits_for_the_nomad_variable() -> None:
    files = _templates(mj.prometheus_job(_spec(token_file="/etc/consul.token")))
    assert files[mj.CONSUL_TOKEN_PATH].data == (
        '{{ with nomadVar "nomad/jobs/prometheus" }}{{ .CONSUL_HTTP_TOKEN }}{{ end }}')
    assert mj.CONSUL_TOKEN_PATH not in _templates(mj.prometheus_job(_spec()))  # ACLs off


DC_CASES = [
    ("spec's consul datacenter", {"datacenter": "eu1"}, "eu1"),
    ("else the allocation's own (NOMAD_DC)", {}, NOMAD_ENV["NOMAD_DC"]),
]


@pytest.mark.parametrize(("consul", "dc"), [c[1:] for c in DC_CASES], ids=[c[0] for c in DC_CASES])
def test_prometheus_job_always_names_the_consul_datacenter(consul: dict[str, Any], dc: str) -> None:
    files = _templates(mj.prometheus_job(_spec(**consul)))
    config = yaml.safe_load(consul_template_literals(files["local/prometheus.yml"].data))
    assert {sd["datacenter"] for job in config["scrape_configs"]
            for sd in job["consul_sd_configs"]} == {dc}


def test_grafana_job_provisions_datasource_and_dashboards() -> None:
    job = mj.grafana_job(_spec())
    files = _templates(job)
    for name, doc in grafana.dashboards().items():
        assert json.loads(consul_template_literals(files[f"local/dashboards/{name}"].data)) == doc
    provider = yaml.safe_load(
        consul_template_literals(files["local/provisioning/dashboards/caravan.yml"].data)
    )
    assert provider["providers"][0]["options"]["path"] == "/local/dashboards"
    assert (
        files["local/prometheus.env"].env
        and 'service "prometheus"' in files["local/prometheus.env"].data
    )
    assert dict(job.groups[0].tasks[0].env)["GF_PATHS_PROVISIONING"] == "/local/provisioning"


@pytest.mark.parametrize("job", mj.prometheus_and_grafana(_spec()), ids=lambda j: j.id)
def test_hcl_parses(job: Job) -> None:
    doc = hcl2.loads(job_hcl(job))
    assert job.id in json.dumps(doc["job"])
