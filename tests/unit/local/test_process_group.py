"""ChildProcess.stop ends what its child left behind in its own process group."""

from __future__ import annotations

import time
from pathlib import Path

from caravan.local.process import ChildProcess, wait_until


def test_stop_ends_an_orphaned_grandchild(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    # sh dies on SIGTERM and leaves its background sleep behind (as tritonserver 2.51 can
    # leave its Python stub), in the group ChildProcess created.
    child = ChildProcess("sh", ["sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"]).start()
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "", 5, "the grandchild")
    grandchild = int(pidfile.read_text())
    assert Path(f"/proc/{grandchild}").exists()
    child.stop(grace_s=5)
    wait_until(lambda: not Path(f"/proc/{grandchild}").exists() or _zombie(grandchild), 5,
               "the grandchild gone")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_stop_of_a_child_that_already_exited_is_quiet() -> None:
    child = ChildProcess("true", ["true"]).start()
    assert child.proc is not None
    child.proc.wait(5)
    time.sleep(0.05)
    assert child.stop() == 0
