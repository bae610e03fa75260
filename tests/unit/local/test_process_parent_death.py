"""Children die with their owner (PR_SET_PDEATHSIG), and only then: a child started
from a thread that ends keeps running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from caravan.local.process import ChildProcess, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]

OWNER = """
import sys, threading, time
from caravan.local.process import ChildProcess
argv = [sys.executable, "-c", "import time; time.sleep(60)"]
direct = ChildProcess("direct", argv).start()
box = []
t = threading.Thread(target=lambda: box.append(ChildProcess("from-thread", argv).start()))
t.start(); t.join()
print(direct.pid, box[0].pid, flush=True)
time.sleep(60)
"""


def gone(pid: int) -> bool:
    """Exited (or a zombie waiting for a reaper that is not its starter)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_child_started_from_a_thread_that_ends_keeps_running() -> None:
    box: list[ChildProcess] = []
    t = threading.Thread(target=lambda: box.append(ChildProcess("sleeper", SLEEP).start()))
    t.start()
    t.join()
    (child,) = box
    try:
        time.sleep(0.3)  # a parent-death signal tied to the ended thread would have fired by now
        assert child.alive(), child.proc.poll() if child.proc else None
    finally:
        child.stop(grace_s=2)


def test_children_exit_when_their_owner_is_sigkilled() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert owner.stdout is not None
        pids = [int(p) for p in owner.stdout.readline().split()]
        assert len(pids) == 2 and not any(gone(p) for p in pids)
        owner.send_signal(signal.SIGKILL)
        owner.wait(5)
        for pid in pids:
            wait_until(lambda pid=pid: gone(pid), 5, f"child {pid} gone after its owner's SIGKILL")
    finally:
        owner.kill()
        owner.wait(5)
