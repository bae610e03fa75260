"""`caravan up`'s stack cannot corrupt itself (issue 17, attacks 8 and 9), with the real
Envoy, control plane, tritonserver replicas and Prometheus:

* a second stack on the same state directory refuses, naming the first one's PID, and
  leaves the first one's registry alone;
* a full disk (an injected ``write_text`` failing with ENOSPC) keeps the last good
  registry, the replica-watch thread survives it and an unexpected error, and the newest
  registry lands once space returns (Envoy then serves the new replica);
* a SIGKILLed Envoy or Prometheus is restarted, and the stack serves again; an Envoy
  that keeps dying fails the stack with a message naming it.
Bounded: every wait <= 30 s.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from caravan.atomic_file import atomic_write_text
from caravan.discovery.registry_file import read_registry
from caravan.local.health import infer_once
from caravan.local.launch import serving_hosts
from caravan.local.process import port_open, venv_binary, wait_until
from caravan.local.statelock import StateDirBusy
from caravan.local.supervisor import LocalPorts, LocalStack, StackOptions
from caravan.spec import parse_spec


def _have_prometheus() -> bool:
    try:
        venv_binary("prometheus")
        return True
    except FileNotFoundError:
        return False


pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not _have_prometheus(), reason="prometheus not installed")]
MODEL = "alpha"
SPEC = parse_spec({"models": [{"name": MODEL, "engine": {"model": "a"},
                               "replicas": {"min": 1, "initial": 1, "max": 3}}]})


class Disk:
    """The stack's state-file writer: real atomic writes unless ``full`` (ENOSPC), or
    ``explode`` > 0 (a RuntimeError, raised only on the replica-watch thread)."""

    def __init__(self) -> None:
        self.full = False
        self.explode = 0

    def __call__(self, path: Path, text: str) -> None:
        if self.explode and threading.current_thread().name == "replica-watch":
            self.explode -= 1
            raise RuntimeError("unexpected")
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        atomic_write_text(path, text)


@pytest.fixture(scope="module")
def disk() -> Disk:
    return Disk()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, disk: Disk) -> Iterator[LocalStack]:
    options = StackOptions(time_scale=0.01, prometheus=True, drain_grace_s=0.5)
    with LocalStack(SPEC, tmp_path_factory.mktemp("resilient"), LocalPorts.free(), options, disk) as s:
        yield s


def registered(stack: LocalStack) -> set[str]:
    return {r.id for r in read_registry(stack.registry_path)}


def test_second_stack_on_the_same_directory_refuses_with_the_first_pid(stack: LocalStack) -> None:
    before = stack.registry_path.read_text()
    second = LocalStack(SPEC, stack.state_dir, LocalPorts.free(), StackOptions(prometheus=False))
    with pytest.raises(StateDirBusy, match=r"in use by another `caravan up` \(PID \d+\)") as err:
        second.start()
    assert err.value.pid == os.getpid()  # this test process runs the first stack
    assert stack.registry_path.read_text() == before
    assert infer_once(stack.endpoint, MODEL)


def test_full_disk_keeps_last_registry_and_recovers(stack: LocalStack, disk: Disk) -> None:
    before = registered(stack)
    disk.full, disk.explode = True, 2
    try:
        stack.scale_to(MODEL, 2)
        wait_until(lambda: stack.counts(MODEL) == (2, 0), 30, "the second replica ready")
        wait_until(lambda: stack.watch_errors >= 2 and stack.registry_file.failures >= 2, 10,
                   "failed writes and a survived error")
        assert registered(stack) == before  # the last good file, not a truncated one
        assert stack.registry_file.pending and "errno 28" in (stack.registry_file.last_error or "")
    finally:
        disk.full = False
    wait_until(lambda: len(registered(stack)) == 2, 5, "the registry written once space returned")
    want = {r.endpoint for r in stack.replicas(MODEL)}
    wait_until(lambda: serving_hosts(stack.ports.envoy_admin, f"model-{MODEL}") == want, 10,
               "Envoy serving both replicas")
    assert not stack.registry_file.pending and not stack.targets_file.pending


@pytest.mark.parametrize("name", ["envoy", "prometheus"])
def test_killed_infrastructure_is_restarted(stack: LocalStack, name: str) -> None:
    victim = stack.infra(name)
    victim.signal(signal.SIGKILL)
    wait_until(lambda: stack.infra(name).pid != victim.pid and stack.infra(name).alive(), 20,
               f"{name} restarted")
    assert stack.infra_restarts()[name] == 1
    port = stack.ports.envoy_admin if name == "envoy" else stack.ports.prometheus
    wait_until(lambda: port_open("127.0.0.1", port), 20, f"{name} listening again")
    wait_until(lambda: infer_once(stack.endpoint, MODEL), 20, "a request through Envoy")
    assert stack.failure() is None


def test_envoy_that_keeps_dying_fails_the_stack_with_its_name(stack: LocalStack) -> None:
    """Runs last (it leaves the stack failed): more than 3 deaths in 5 minutes."""
    for _ in range(5):  # the 4th death exhausts the budget (one restart was spent above)
        if stack.failure() is not None:
            break
        victim = stack.infra("envoy")
        victim.signal(signal.SIGKILL)
        wait_until(lambda v=victim.pid: stack.failure() is not None or stack.infra("envoy").pid != v, 20,
                   "envoy restarted or given up on")
    assert stack.infra_restarts()["envoy"] == 3
    failure = stack.wait_failure(0)
    assert failure is not None and failure.startswith("envoy exited (code -9) after 3 restarts within 300 s")
    assert "envoy.log" in failure
