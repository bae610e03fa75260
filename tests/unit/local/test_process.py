"""ChildProcess: one child per instance, ended by PID."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from caravan.local.process import ChildProcess, free_port


def test_start_twice_and_context_manager_own_a_single_child(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(30)"]
    with ChildProcess("sleeper", argv, tmp_path / "log").start() as child:
        first = child.pid
        assert child.start().pid == first
        assert child.alive()
    with pytest.raises(ProcessLookupError):
        os.kill(first, 0)
    assert child.proc is not None and child.proc.returncode is not None


def test_free_port_never_hands_out_a_port_twice() -> None:
    """The OS may offer a just-released port again; two children given the same port
    race for it (seen: a replica failing to bind while a control plane held its port)."""
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
