"""`caravan up` as a real process: a second one on the same state directory exits 1
naming the first's PID; SIGKILL of the first leaves none of its children (replicas
with their Python backend stubs, control plane, Envoy) running: they get SIGTERM from
the kernel (PR_SET_PDEATHSIG) and exit within seconds."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import yaml

from caravan.local.health import infer_once
from caravan.local.process import descendants, free_port, wait_until
from caravan.local.statelock import LOCK_FILE


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def up(spec: Path) -> list[str]:
    return [sys.executable, "-m", "caravan", "up", str(spec), "--no-prometheus"]


def test_second_up_refuses_and_sigkilled_up_leaves_no_child(tmp_path: Path) -> None:
    listen, state = free_port(), tmp_path / "state"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "models": [{"name": "tiny", "engine": {"model": "t"}, "replicas": {"min": 1, "initial": 2, "max": 2}}],
        "envoy": {"listen_port": listen, "admin_port": free_port()},
        "control_plane": {"xds_port": free_port(), "admin_port": free_port()},
        "local": {"time_scale": 0.01, "prometheus_port": free_port(), "state_dir": str(state)},
    }))
    first = subprocess.Popen(up(spec), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: infer_once(f"127.0.0.1:{listen}", "tiny", timeout_s=2), 90,
                   "the first caravan up serving", every_s=0.5)
        assert (state / LOCK_FILE).read_text().strip() == str(first.pid)
        second = subprocess.run(up(spec), capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert f"(PID {first.pid})" in " ".join((second.stdout + second.stderr).split())
        assert infer_once(f"127.0.0.1:{listen}", "tiny")  # the first one is untouched
        family = descendants(first.pid)[1:]
        assert len(family) >= 6  # xds, envoy, 2 tritonservers and their 2 stubs
        first.send_signal(signal.SIGKILL)
        first.wait(5)
        for pid in family:
            wait_until(lambda pid=pid: gone(pid), 10, f"child {pid} of the SIGKILLed caravan up gone")
    finally:
        first.kill()
        first.wait(5)
