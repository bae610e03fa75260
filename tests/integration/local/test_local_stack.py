"""`caravan up`'s supervisor against the real Envoy, control plane and replicas."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from caravan.discovery.registry_file import read_registry
from caravan.discovery.types import HealthStatus
from caravan.local.health import infer_once
from caravan.local.process import descendants, wait_until
from caravan.local.supervisor import LocalPorts, LocalStack, StackError, StackOptions
from caravan.spec import PlatformSpec, parse_spec

SPEC = {
    "models": [
        {"name": "alpha", "engine": {"model": "a"}, "replicas": {"min": 1, "initial": 2, "max": 3}},
        {"name": "beta", "engine": {"model": "b"}},
    ]
}


def spec() -> PlatformSpec:
    return parse_spec(SPEC)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    s = LocalStack(spec(), tmp_path_factory.mktemp("stack"), LocalPorts.free(),
                   StackOptions(time_scale=0.01, prometheus=False, drain_grace_s=0.5))
    with s:
        yield s


def test_every_model_serves_through_envoy(stack: LocalStack) -> None:
    assert stack.counts("alpha") == (2, 0)
    assert stack.counts("beta") == (1, 0)
    assert infer_once(stack.endpoint, "alpha")
    assert infer_once(stack.endpoint, "beta")


def test_registry_lists_ready_replicas(stack: LocalStack) -> None:
    regs = read_registry(stack.registry_path)
    assert sorted(r.model for r in regs) == ["alpha", "alpha", "beta"]
    assert all(r.health is HealthStatus.HEALTHY and r.metrics_port for r in regs)


def test_scale_up_then_drain_down(stack: LocalStack) -> None:
    stack.scale_to("alpha", 3)
    wait_until(lambda: stack.counts("alpha") == (3, 0), 15, "3 ready alpha replicas")
    newest = max(stack.replicas("alpha"), key=lambda r: int(r.id.rsplit("-", 1)[1]))
    stack.scale_to("alpha", 2)
    drained = {r.id: r.health for r in read_registry(stack.registry_path)}
    assert drained[newest.id] is HealthStatus.DRAINING
    wait_until(lambda: newest.id not in {r.id for r in read_registry(stack.registry_path)}, 15,
               "the newest replica drained out of the registry")
    assert stack.counts("alpha") == (2, 0)
    assert infer_once(stack.endpoint, "alpha")


def test_negative_count_is_refused(stack: LocalStack) -> None:
    with pytest.raises(ValueError, match="count: must be >= 0"):
        stack.scale_to("alpha", -1)


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    s = LocalStack(spec(), tmp_path, LocalPorts.free(), StackOptions(time_scale=0.01, prometheus=False)).start()
    pids = list(s.pids().values())
    assert len(pids) == 5  # xds, envoy, 3 replicas
    stubs = [c for pid in pids for c in descendants(pid)[1:]]
    assert len(stubs) >= 3  # each tritonserver runs its model in a Python backend stub
    s.stop()
    for pid in stubs:
        wait_until(lambda pid=pid: not Path(f"/proc/{pid}").exists(), 10, f"stub {pid} gone")
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ports = LocalPorts.free()
        ports = LocalPorts(busy.getsockname()[1], ports.envoy_admin, ports.xds, ports.xds_admin, ports.prometheus)
        with pytest.raises(StackError, match=r"\(envoy_listen\) is already in use"):
            LocalStack(spec(), tmp_path, ports, StackOptions(prometheus=False)).start()


def test_readme_stream_client_streams_tokens_through_envoy(stack: LocalStack) -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[3] / "examples" / "stream_client.py"
    proc = subprocess.run([sys.executable, str(script), stack.endpoint, "alpha"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text, _, served = proc.stdout.rpartition("\n(served by replica ")
    assert len(text.split()) == 64  # max_tokens words, streamed chunk by chunk
    assert served.rstrip(")\n") in {r.endpoint for r in stack.replicas("alpha")}
