"""`caravan demo` end to end: a real subprocess, the real stack, a small sweep."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from caravan.local.process import free_port


def test_demo_prints_reference_table_with_zero_errors(tmp_path: Path) -> None:
    spec = {
        "models": [{"name": "tiny", "engine": {"model": "t"}, "replicas": {"min": 1, "initial": 2, "max": 2}}],
        "envoy": {"listen_port": free_port(), "admin_port": free_port()},
        "control_plane": {"xds_port": free_port(), "admin_port": free_port()},
        "local": {"time_scale": 0.01, "prometheus_port": free_port(), "state_dir": str(tmp_path / "state")},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out" / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "caravan", "demo", str(path), "--concurrency", "1,4", "--requests", "6,12",
         "--output", str(out)],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for header in ("Concurrency", "Total requests", "Mean response time", "P95 latency", "Errors"):
        assert header in proc.stdout
    result = json.loads(out.with_suffix(".json").read_text())
    levels = result["levels"]
    assert [lv["summary"]["requests"] for lv in levels] == [6, 12]
    assert all(lv["summary"]["ok"] == lv["summary"]["requests"] for lv in levels)
    assert out.with_suffix(".png").stat().st_size > 1000
