"""The rendered bootstrap is accepted by the real Envoy binary (``--mode validate``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from caravan.local.process import venv_binary
from caravan.render.envoy import bootstrap
from caravan.spec import load_spec

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_envoy_validates_rendered_bootstrap(tmp_path: Path, delta: bool) -> None:
    spec = load_spec(ROOT / "examples" / "platform.yaml")
    path = tmp_path / "envoy.yaml"
    path.write_text(
        yaml.safe_dump(bootstrap(spec, [("127.0.0.1", 18000), ("127.0.0.1", 18002)], delta=delta))
    )
    out = subprocess.run(
        [venv_binary("envoy"), "--mode", "validate", "-c", str(path), "--use-dynamic-base-id"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK" in out.stdout + out.stderr
