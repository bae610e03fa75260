"""One ``caravan up`` per state directory: an exclusive ``flock`` on ``<state_dir>/up.lock``.

Two stacks sharing a state directory corrupt each other (issue 17, attack 8: the second
overwrites the first's replica registry, so the first Envoy routes to the second's
replicas; the second's Prometheus maps the first's query log and the first dies of
SIGBUS). The holder writes its PID into the lock file; a second ``acquire`` fails at
once with ``StateDirBusy`` naming that PID.

A lock never outlives its holder: the kernel drops a ``flock`` when the last descriptor
of the open file closes, which happens when the process dies, however it dies (SIGKILL
included). So a lock file left by a dead process (its PID still written in it) is simply
taken over. The descriptor is close-on-exec, so children never hold it.

Not thread-safe: one owner per instance.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from caravan.errors import BackendError

LOCK_FILE = "up.lock"


class StateDirBusy(BackendError, RuntimeError):
    """Another live process holds the state directory's lock; the message names its PID."""

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        who = f"PID {pid}" if pid is not None else "a process whose PID is not recorded yet"
        super().__init__(
            f"state directory {state_dir} is in use by another `caravan up` ({who}); stop it "
            "first (Ctrl-C, or kill -TERM the PID), or give this one its own --state-dir")
        self.pid = pid


class StateLock:
    """The exclusive lock of ``state_dir`` (created if missing)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> StateLock:
        """Take the lock and write this process's PID into it, or raise ``StateDirBusy``
        (never blocks). Idempotent while held."""
        if self._fd is not None:
            return self
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateDirBusy(self.state_dir, holder_pid(self.path)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays; its PID is stale from now on). Idempotent."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the only descriptor drops the flock
        self._fd = None

    def __enter__(self) -> StateLock:
        return self.acquire()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def holder_pid(path: Path) -> int | None:
    """The PID written in the lock file ``path`` (None when missing, empty or garbled)."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
