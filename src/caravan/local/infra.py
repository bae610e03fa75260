"""The local stack's infrastructure children (control plane, Envoy, Prometheus): kept
running, and a death is never silent.

Policy (``InfraSet.check``, called by the supervisor's ``infra-watch`` thread every
``INFRA_CHECK_S``): a child that exits is **restarted** with the same argv, ports and
log, and the stack keeps serving, because none of them holds state the stack cannot
rebuild: Envoy gets its whole config again from the control plane over xDS, the
control plane rebuilds its snapshot from the registry file, Prometheus reopens its data
directory (replaying its WAL). Stopping the whole stack instead would turn one crash
into an outage of every model. Each restart is logged (warning, with the exit code).
A child that keeps dying is not restarted forever: after ``RESTART_ATTEMPTS`` restarts
within ``RESTART_WINDOW_S`` the set reports a failure (the message names the child,
its exit code and its log), and ``caravan up`` then stops the stack and exits 1.
A child left out of ``auto_restart`` is reported once (error) and left down (fault
tests that restart the control plane by hand use this).

Thread-safety: ``check``, ``restart``, ``stop_all`` and the readers share one lock;
``check`` may block while a child restarts (up to its start timeout).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from caravan.local.process import ChildExited, ChildProcess

log = logging.getLogger(__name__)

INFRA_CHECK_S = 0.2
RESTART_ATTEMPTS = 3
RESTART_WINDOW_S = 300.0


class RestartBudget:
    """At most ``attempts`` restarts in any ``window_s`` seconds (clock injected). Pure."""

    def __init__(self, attempts: int = RESTART_ATTEMPTS, window_s: float = RESTART_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.attempts, self.window_s, self._clock = attempts, window_s, clock
        self._used: deque[float] = deque()

    def take(self) -> bool:
        """Spend one restart if the window has one left."""
        now = self._clock()
        while self._used and now - self._used[0] >= self.window_s:
            self._used.popleft()
        if len(self._used) >= self.attempts:
            return False
        self._used.append(now)
        return True


@dataclass
class _Infra:
    name: str
    start: Callable[[], ChildProcess]  # starts the child and waits until it listens; raises
    proc: ChildProcess
    budget: RestartBudget
    restarts: int = 0
    reported: bool = False


@dataclass
class InfraSet:
    """Named infrastructure children and their restart policy."""

    auto_restart: frozenset[str]
    budget: Callable[[], RestartBudget] = RestartBudget
    _children: list[_Infra] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, start: Callable[[], ChildProcess]) -> ChildProcess:
        """Run ``start`` (raises ``ChildExited`` / ``TimeoutError``) and keep the child."""
        proc = start()
        with self._lock:
            self._children.append(_Infra(name, start, proc, self.budget()))
        return proc

    def get(self, name: str) -> ChildProcess:
        """The child called ``name``; KeyError if there is none."""
        with self._lock:
            return self._find(name).proc

    def procs(self) -> list[ChildProcess]:
        with self._lock:
            return [c.proc for c in self._children]

    def restarts(self) -> dict[str, int]:
        """Automatic restarts so far, per child."""
        with self._lock:
            return {c.name: c.restarts for c in self._children}

    def restart(self, name: str, grace_s: float = 1.0) -> ChildProcess:
        """Stop ``name`` if it runs and start its argv again (same ports and log),
        without waiting for it to listen."""
        with self._lock:
            c = self._find(name)
            c.proc.stop(grace_s=grace_s)
            c.proc = ChildProcess(c.proc.name, c.proc.argv, c.proc.log_path, c.proc.env).start()
            c.reported = False
            return c.proc

    def check(self) -> str | None:
        """Restart every dead child that may be restarted; return a failure message
        when one has used up its restarts (None otherwise)."""
        with self._lock:
            for c in self._children:
                if not c.proc.alive() and (failure := self._handle_death(c)):
                    return failure
        return None

    def stop_all(self, grace_s: float = 10.0) -> None:
        """End every child, newest first, by PID."""
        with self._lock:
            children, self._children = self._children, []
        for c in reversed(children):
            c.proc.stop(grace_s=grace_s)

    def _find(self, name: str) -> _Infra:
        for c in self._children:
            if c.name == name:
                return c
        raise KeyError(name)

    def _handle_death(self, c: _Infra) -> str | None:
        code = c.proc.proc.returncode if c.proc.proc is not None else None
        if c.name not in self.auto_restart:
            if not c.reported:
                c.reported = True
                log.error("%s exited (code %s); not restarted (auto_restart off for it); log: %s",
                          c.name, code, c.proc.log_path, extra={"child": c.name, "code": code})
            return None
        if not c.budget.take():
            return (f"{c.name} exited (code {code}) after {c.restarts} restarts within "
                    f"{c.budget.window_s:g} s; giving up. Its log: {c.proc.log_path}\n{c.proc.tail(15)}")
        c.restarts += 1
        log.warning("%s exited (code %s); restarting it (restart %d)", c.name, code, c.restarts,
                    extra={"child": c.name, "code": code, "restart": c.restarts})
        c.proc.stop(grace_s=1)
        try:
            c.proc = c.start()
        except (ChildExited, TimeoutError) as exc:
            log.error("%s did not restart: %s", c.name, exc, extra={"child": c.name})
        return None
