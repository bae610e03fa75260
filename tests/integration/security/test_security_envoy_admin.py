"""Real Envoy: the stats-only listener of the Nomad job's bootstrap serves Prometheus
stats and readiness and nothing else of the admin (issue 17, High #1); the rendered
job template passes ``envoy --mode validate``."""

from __future__ import annotations

import http.client
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from tests.unit.render.test_render_nomad_templates import render_template

from caravan.local.launch import start_envoy
from caravan.local.process import free_port, venv_binary, wait_for_port
from caravan.nomad import nomad_templates
from caravan.render import envoy
from caravan.spec import load_spec

pytestmark = pytest.mark.integration
SPEC = load_spec("examples/platform.yaml")


def _request(port: int, method: str, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def test_rendered_job_bootstrap_passes_envoy_validate(tmp_path: Path) -> None:
    text = render_template(nomad_templates.envoy_bootstrap(SPEC),
                           {"NOMAD_IP_stats": "127.0.0.1", "NOMAD_PORT_stats": "25001"},
                           {"caravan-xds": [("127.0.0.1", 18000)]})
    path = tmp_path / "envoy.json"
    path.write_text(text)
    proc = subprocess.run([venv_binary("envoy"), "--mode", "validate", "-c", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_stats_listener_serves_stats_and_ready_only(tmp_path: Path) -> None:
    admin, stats = free_port(), free_port()
    spec = SPEC.model_copy(update={"envoy": SPEC.envoy.model_copy(update={"admin_port": admin})})
    boot = envoy.bootstrap(spec, [("127.0.0.1", free_port())], stats=("127.0.0.1", stats))
    del boot["dynamic_resources"]  # no control plane: Envoy's workers (and listeners) start at once
    config = tmp_path / "envoy.yaml"
    config.write_text(yaml.safe_dump(boot))
    with start_envoy(config, tmp_path / "envoy.log", admin_port=admin) as proc:
        wait_for_port("127.0.0.1", stats, timeout_s=15)
        status, body = _request(stats, "GET", "/stats/prometheus")
        assert status == 200 and "envoy_server_live" in body
        status, body = _request(stats, "GET", "/ready")
        assert (status, body.strip()) == (200, "LIVE")
        assert _request(stats, "GET", "/stats/prometheus?usedonly")[0] == 200
        for method, path in [("POST", "/quitquitquit"), ("GET", "/quitquitquit"),
                             ("POST", "/logging?level=debug"), ("GET", "/config_dump"),
                             ("POST", "/stats/prometheus"), ("POST", "/ready"),
                             ("GET", "/stats/prometheus/../config_dump"), ("GET", "/stats"),
                             ("GET", "//quitquitquit"), ("POST", "/healthcheck/fail"),
                             ("GET", "/%2Fconfig_dump"), ("POST", "/drain_listeners")]:
            status, _ = _request(stats, method, path)
            assert status in (400, 404), (method, path, status)
        assert proc.alive()
        status, body = _request(admin, "GET", "/server_info")
        assert status == 200 and json.loads(body)["state"] != "DRAINING"
