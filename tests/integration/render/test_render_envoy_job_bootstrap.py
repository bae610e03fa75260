"""The Envoy job's bootstrap template, rendered for a sample allocation, passes the real
Envoy's config validation (``envoy --mode validate``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.unit.render.test_render_nomad_templates import render_template

from caravan.local.process import venv_binary
from caravan.nomad import nomad_templates
from caravan.spec import load_spec

pytestmark = pytest.mark.integration


def test_real_envoy_accepts_the_rendered_job_bootstrap(tmp_path: Path) -> None:
    spec = load_spec("examples/platform.yaml")
    text = render_template(nomad_templates.envoy_bootstrap(spec), {"NOMAD_IP_admin": "127.0.0.1"},
                           {"caravan-xds": [("127.0.0.1", 18000), ("127.0.0.2", 18000)]})
    path = tmp_path / "envoy.json"
    path.write_text(text)
    proc = subprocess.run([venv_binary("envoy"), "--mode", "validate", "-c", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "OK" in proc.stdout + proc.stderr
