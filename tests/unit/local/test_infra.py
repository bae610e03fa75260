"""InfraSet: a dead infrastructure child is restarted (real processes), one that keeps
dying is given up on with a message naming it; RestartBudget's window (fake clock)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from caravan.local.infra import InfraSet, RestartBudget
from caravan.local.process import ChildProcess, wait_until


def test_budget_allows_attempts_per_window() -> None:
    now = [0.0]
    b = RestartBudget(attempts=2, window_s=10, clock=lambda: now[0])
    assert b.take() and b.take() and not b.take()
    now[0] = 9.9
    assert not b.take()
    now[0] = 10.0
    assert b.take() and b.take() and not b.take()  # both attempts left the window


def test_dead_child_is_restarted_then_given_up_on(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(30)"]
    infra = InfraSet(frozenset({"svc"}), budget=lambda: RestartBudget(attempts=2, window_s=60))
    first = infra.add("svc", lambda: ChildProcess("svc", argv, tmp_path / "svc.log").start())
    try:
        assert infra.check() is None  # alive: nothing to do
        first.signal(signal.SIGKILL)
        wait_until(lambda: not first.alive(), 5, "svc dead")
        assert infra.check() is None
        second = infra.get("svc")
        assert second.pid != first.pid and second.alive()
        assert infra.restarts() == {"svc": 1}
        for _ in range(2):
            infra.get("svc").signal(signal.SIGKILL)
            wait_until(lambda: not infra.get("svc").alive(), 5, "svc dead")
            failure = infra.check()
        assert failure is not None and failure.startswith("svc exited (code -9) after 2 restarts")
        assert str(tmp_path / "svc.log") in failure
    finally:
        infra.stop_all(grace_s=1)


def test_child_without_auto_restart_is_reported_and_left_down() -> None:
    infra = InfraSet(frozenset())
    child = infra.add("xds", lambda: ChildProcess("xds", ["true"]).start())
    wait_until(lambda: not child.alive(), 5, "exited")
    assert infra.check() is None and infra.get("xds") is child and infra.restarts() == {"xds": 0}
