"""Child processes Caravan starts and owns (replicas, control plane, Envoy, Prometheus).

A ``ChildProcess`` ends only the process it started, by its PID (SIGTERM, then
SIGKILL after a grace period). Used by ``caravan up`` and by test fixtures.
Children die with their owner: on Linux each is started with ``PR_SET_PDEATHSIG``
= SIGTERM (so a SIGKILLed ``caravan up`` leaves no replica, Envoy or Prometheus
holding its ports; SIGTERM lets tritonserver stop its Python backend stub). The kernel
sends that signal when the *thread* that forked the child exits, so every child is
forked by one long-lived spawner thread, never by the short-lived thread that asked.
Not thread-safe: one owner per instance. ``wait_until`` is the one bounded wait every
starter (``caravan.local.launch``), test and benchmark uses.
"""

from __future__ import annotations

import collections
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO

from caravan.errors import BackendError

_RECENT_PORTS = 4096  # remembered hand-outs: far more than a stack starts at once
_HANDED_OUT: collections.deque[int] = collections.deque(maxlen=_RECENT_PORTS)
_HANDED_OUT_LOCK = threading.Lock()
PARENT_DEATH_SIGNAL = signal.SIGTERM
# Forks every child; its thread lives as long as this process (see the module docstring).
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="caravan-spawner")
# Runs in the child before the real program: asks the kernel for the signal when the
# forking thread dies (PR_SET_PDEATHSIG = 1), ends at once if the parent is already gone,
# then execs argv[3:] (same PID, environment kept). A shim rather than ``preexec_fn``:
# Python code between fork and exec runs os.register_at_fork hooks, and grpc's aborts
# the child (seen: SIGABRT, "epoll_wait error: Bad file descriptor").
_DEATH_SHIM = (
    "import ctypes, os, sys\n"
    "sig = int(sys.argv[2])\n"
    "ctypes.CDLL(None).prctl(1, sig, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os.kill(os.getpid(), sig)\n"
    "os.execvp(sys.argv[3], sys.argv[3:])\n"
)


def die_with_parent(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """``argv`` wrapped so its process gets ``PARENT_DEATH_SIGNAL`` when this process
    dies (Linux; elsewhere ``argv`` unchanged). FileNotFoundError now, in this process,
    when ``argv[0]`` is not an executable on ``env``'s PATH."""
    if shutil.which(argv[0], path=env.get("PATH", os.defpath)) is None:
        raise FileNotFoundError(f"{argv[0]!r}: no such executable")
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-I", "-S", "-c", _DEATH_SHIM, str(os.getpid()),
            str(int(PARENT_DEATH_SIGNAL)), *argv]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the OS picks it), and not one
    of the last 4096 this process handed out: the OS may offer a port again before the
    child it was meant for has bound it, and two children would then race for it.
    Thread-safe."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        with _HANDED_OUT_LOCK:
            if port not in _HANDED_OUT:
                _HANDED_OUT.append(port)
                return port


def port_open(host: str, port: int, timeout_s: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout_s: float = 15.0) -> None:
    """Block until ``host:port`` accepts TCP connections. TimeoutError after ``timeout_s``."""
    wait_until(lambda: port_open(host, port), timeout_s, f"something listening on {host}:{port}")


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process under it, from /proc (Linux): e.g. a tritonserver
    and the Python backend stub it runs its model in. Processes that exit meanwhile are
    skipped."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def venv_binary(name: str) -> str:
    """Path of an executable installed next to this Python (the venv's bin), else on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name!r} not found next to {sys.executable} or on PATH")
    return found


def caravan_argv(*args: str) -> list[str]:
    """argv that runs ``caravan ARGS`` with this same interpreter."""
    return [sys.executable, "-m", "caravan", *args]


class ChildProcess:
    """One child process, its output going to ``log_path`` (or discarded)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(os.environ if env is None else env)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ChildProcess:
        """Start the child once; calling it again (e.g. ``with ChildProcess(...).start()``)
        returns the same running child rather than a second, unowned one."""
        if self.proc is not None:
            return self
        if self.log_path is None:
            self.proc = self._popen(subprocess.DEVNULL)
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:  # the child keeps its own descriptor
            self.proc = self._popen(out)
        return self

    def _popen(self, out: int | IO[bytes]) -> subprocess.Popen[bytes]:
        """Fork on the spawner thread (so the parent-death signal fires only when this
        process dies, not when the calling thread ends)."""
        def popen() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                die_with_parent(self.argv, self.env), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self.env, start_new_session=True,
            )

        return _SPAWNER.submit(popen).result()

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to this child only (by PID)."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def stop(self, grace_s: float = 5.0) -> int | None:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL; then SIGKILL whatever is left of
        the child's own process group (it was started in a new session, so the group
        holds only its descendants: e.g. a tritonserver's Python backend stub, which 2.51
        can leave running after a kill). Returns the child's exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode

    def __enter__(self) -> ChildProcess:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def tail(self, lines: int = 30) -> str:
        """Last lines of the child's log, for error messages."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class ChildExited(BackendError, RuntimeError):
    """A child process a wait depended on exited; the message holds its log's tail."""


def wait_until(pred: Callable[[], bool], timeout_s: float, what: str, *, every_s: float = 0.05,
               procs: Iterable[ChildProcess] = ()) -> float:
    """Poll ``pred`` until it returns true; return the ``time.monotonic()`` at which it did.

    Exceptions from ``pred`` (a port not open yet, an admin API still starting) count as
    false. ``procs``: children the condition depends on; if one exits first, raise
    ``ChildExited`` at once. After ``timeout_s`` raise ``TimeoutError`` naming ``what``,
    the last exception and the log tail of ``procs``."""
    watched = list(procs)
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while True:
        try:
            if pred():
                return time.monotonic()
        except Exception as exc:
            last = exc
        for p in watched:
            if not p.alive():
                raise ChildExited(f"{what}: {p.name} exited (code {_code(p)})" + _tails([p]))
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {what}"
                               + (f" (last error: {last!r})" if last else "") + _tails(watched))
        time.sleep(every_s)


def _code(p: ChildProcess) -> int | None:
    return p.proc.returncode if p.proc is not None else None


def _tails(procs: Sequence[ChildProcess]) -> str:
    out = [f"\n--- {p.name} ({p.log_path}) ---\n{tail}" for p in procs if (tail := p.tail())]
    return "".join(out)
