"""ChildProcess: one child per instance, ended by PID."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from caravan.local.process import ChildProcess


def test_start_twice_and_context_manager_own_a_single_child(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; time.sleep(30)"]
    with ChildProcess("sleeper", argv, tmp_path / "log").start() as child:
        first = child.pid
        assert child.start().pid == first
        assert child.alive()
    with pytest.raises(ProcessLookupError):
        os.kill(first, 0)
    assert child.proc is not None and child.proc.returncode is not None
