"""One `caravan up` per state directory: the second refuses naming the first's PID;
a lock left by a dead process is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from caravan.local.statelock import LOCK_FILE, StateDirBusy, StateLock

HOLDER = """
import sys, time
from pathlib import Path
from caravan.local.statelock import StateLock
StateLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(60)
"""


def hold_in_child(state_dir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(state_dir)], stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_is_refused_with_the_first_pid(tmp_path: Path) -> None:
    holder = hold_in_child(tmp_path)
    try:
        with pytest.raises(StateDirBusy, match=rf"in use by another `caravan up` \(PID {holder.pid}\)") as err:
            StateLock(tmp_path).acquire()
        assert err.value.pid == holder.pid
        assert str(tmp_path) in str(err.value)
    finally:
        holder.kill()
        holder.wait(5)


def test_lock_of_a_sigkilled_holder_is_taken_over(tmp_path: Path) -> None:
    holder = hold_in_child(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(5)
    assert (tmp_path / LOCK_FILE).read_text().strip() == str(holder.pid)  # stale PID left behind
    with StateLock(tmp_path) as lock:
        assert lock.held
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())


def test_same_process_twice_is_refused_and_release_frees_it(tmp_path: Path) -> None:
    first = StateLock(tmp_path / "new").acquire()  # creates the directory
    with pytest.raises(StateDirBusy, match=f"PID {os.getpid()}"):
        StateLock(tmp_path / "new").acquire()
    first.release()
    first.release()  # idempotent
    StateLock(tmp_path / "new").acquire().release()
