"""consul-template texts in the jobs, rendered the way Nomad would for a sample allocation.

``render_template`` evaluates only the actions these templates use (``env``, the
``range service`` over ``caravan-xds``), and fails on any other action, so a new
action in a template has to be taught here on purpose.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from caravan.nomad import nomad_templates
from caravan.render import envoy
from caravan.spec import load_spec, parse_spec

SPEC = load_spec("examples/platform.yaml")
XDS_RANGE = re.compile(
    r'\[\{\{ range \$i, \$s := service "(?P<svc>[\w-]+)" \}\}\{\{ if \$i \}\}, \{\{ end \}\}'
    r"\{\{ with \$s \}\}(?P<body>.*?)\{\{ end \}\}\{\{ end \}\}\]")
ENV = re.compile(r'\{\{ env "(?P<name>[\w.-]+)" \}\}')


def render_template(text: str, env: dict[str, str],
                    services: dict[str, list[tuple[str, int]]]) -> str:
    def expand(m: re.Match[str]) -> str:
        items = [m.group("body").replace("{{ .Address }}", a).replace("{{ .Port }}", str(p))
                 for a, p in services.get(m.group("svc"), [])]
        return "[" + ", ".join(items) + "]"

    text = XDS_RANGE.sub(expand, text)
    text = ENV.sub(lambda m: env[m.group("name")], text)
    assert "{{" not in text, f"unhandled template action in: {text[text.index('{{'):][:80]}"
    return text


@pytest.mark.parametrize(
    "instances",
    [[("10.0.0.5", 23001)], [("10.0.0.5", 23001), ("10.0.0.6", 23002)], []],
    ids=["one-xds", "two-xds", "none-yet"],
)
def test_envoy_bootstrap_template_is_the_bootstrap(instances: list[tuple[str, int]]) -> None:
    text = render_template(nomad_templates.envoy_bootstrap(SPEC),
                           {"NOMAD_IP_stats": "10.0.0.9", "NOMAD_PORT_stats": "23999"},
                           {"caravan-xds": instances})
    got = json.loads(text)
    want: dict[str, Any] = envoy.bootstrap(SPEC, instances or [("x", 1)], stats=("10.0.0.9", 23999))
    if not instances:
        want["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0][
            "lb_endpoints"] = []
    assert got == want


def test_xds_spec_template_is_a_valid_spec_with_allocation_ports() -> None:
    text = nomad_templates.platform_yaml(SPEC, xds_ports=True)
    env = {"NOMAD_IP_xds": "10.0.0.7", "NOMAD_PORT_xds": "24001", "NOMAD_PORT_admin": "24002"}
    spec = parse_spec(yaml.safe_load(render_template(text, env, {})))
    assert (spec.control_plane.address, spec.control_plane.xds_port,
            spec.control_plane.admin_port) == ("10.0.0.7", 24001, 24002)
    assert spec.envoy.address == "0.0.0.0"
    assert spec.models == SPEC.models


def test_autoscaler_spec_template_needs_no_allocation_ports() -> None:
    text = nomad_templates.platform_yaml(SPEC, xds_ports=False)
    spec = parse_spec(yaml.safe_load(render_template(text, {}, {})))
    assert spec.models == SPEC.models and spec.nomad == SPEC.nomad.model_copy(
        update={"token_file": None})


def test_secrets_template_reads_the_jobs_nomad_variables_only() -> None:
    text = nomad_templates.secrets_env("triton-a")
    assert text.startswith('{{ range nomadVarList "nomad/jobs/triton-a" }}')
    assert "{{ .K }}={{ .V | toJSON }}" in text
