"""What the convergence benchmark's measurements share: the Consul fake, the control
plane child, spec files, and millisecond summaries (``convergence.py`` describes the run)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from caravan.bench.stats import percentile
from caravan.local.launch import Launcher, http_get
from caravan.local.process import ChildProcess
from caravan.spec import PlatformSpec
from caravan.triton.launcher import ReplicaOptions
from fakes import load_fake

if TYPE_CHECKING:
    from tests.fakes.consul import ConsulFake

REPLICA_OPTIONS = ReplicaOptions(time_scale=0.01, stream_interval_ms=0, exit_timeout_s=10)
QUIET_MS, MAX_MS = 50, 1000  # the spec's defaults


def consul_fake() -> ConsulFake:
    """A new Consul fake (``tests/fakes/consul/``)."""
    fake: ConsulFake = load_fake("consul").ConsulFake()
    return fake


@contextmanager
def stopping(fake: ConsulFake) -> Iterator[ConsulFake]:
    """Stop ``fake`` on exit (after the processes of an enclosed ``Launcher``)."""
    try:
        yield fake
    finally:
        fake.stop()


def get_json(port: int, path: str) -> Any:
    status, body = http_get(port, path)
    if status != 200:
        raise RuntimeError(f"GET :{port}{path} -> {status}: {body[:200]}")
    return json.loads(body)


def write_spec(spec: PlatformSpec, path: Path) -> Path:
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    return path


@dataclass
class ControlPlaneProc:
    """One ``caravan xds --consul`` child."""

    name: str
    xds_port: int
    admin_port: int
    proc: ChildProcess

    def clients(self) -> list[dict[str, Any]]:
        data = get_json(self.admin_port, "/debug/clients")
        assert isinstance(data, list)
        return data


def start_control_plane(launcher: Launcher, spec: PlatformSpec, spec_path: Path, name: str,
                        timeout_s: float = 30) -> ControlPlaneProc:
    """``caravan xds --consul`` on the spec's ports; returns once /readyz answers 200."""
    port, admin = spec.control_plane.xds_port, spec.control_plane.admin_port
    proc = launcher.control_plane(spec_path, port=port, admin_port=admin, consul=True, node_id=name,
                                  name=name, ready=True, timeout_s=timeout_s)
    return ControlPlaneProc(name, port, admin, proc)


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


def summary(values_ms: list[float]) -> dict[str, float]:
    """p50/p99/max/mean of a list of milliseconds."""
    return {"n": len(values_ms), "p50": round(percentile(values_ms, 50), 2),
            "p99": round(percentile(values_ms, 99), 2), "max": round(max(values_ms), 2),
            "mean": round(statistics.fmean(values_ms), 2)}
