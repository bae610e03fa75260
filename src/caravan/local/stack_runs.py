"""What ``caravan up`` and ``caravan demo`` do with a local session (the services
behind ``caravan.local.commands``).

``serve(config, console)`` starts the stack and keeps it until Ctrl-C / SIGTERM or
until it fails; ``demo(config, console)`` starts it, runs the sweep (or the autoscaling
scenario) and stops it. Both return the process exit code; both stop every process
they started, whatever happens. A start failure is one clear line and exit 1.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from rich.console import Console

from caravan.bench.arrivals import LoadLevel
from caravan.errors import ConfigError
from caravan.exits import FAILED
from caravan.local.demo import demo_levels, run_autoscale_demo, run_demo
from caravan.local.session import LocalSession
from caravan.local.supervisor import StackError
from caravan.spec import PlatformSpec


@dataclass(frozen=True)
class StackConfig:
    """The local stack of ``spec``; ``state_dir`` / ``time_scale`` None: the spec's."""

    spec: PlatformSpec
    state_dir: Path | None = None
    time_scale: float | None = None
    prometheus: bool = True
    autoscale: bool = False

    def __post_init__(self) -> None:
        if self.time_scale is not None and not self.time_scale > 0:
            raise ConfigError(f"--time-scale: must be > 0, got {self.time_scale:g}")


@dataclass(frozen=True)
class DemoConfig:
    """``caravan demo``: the stack, then the sweep's ``levels`` (written under the
    ``output`` prefix), or the autoscaling scenario when ``stack.autoscale``."""

    stack: StackConfig
    levels: tuple[LoadLevel, ...]
    output: Path

    @classmethod
    def parse(cls, stack: StackConfig, concurrency: str, requests: str | None,
              output: Path) -> DemoConfig:
        """ConfigError names ``--concurrency`` / ``--requests`` when they are bad."""
        try:
            return cls(stack, demo_levels(concurrency, requests), output)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def serve(config: StackConfig, console: Console) -> int:
    """Run the stack until interrupted (0) or until it stops serving (1, naming why)."""
    failure: list[str] = []

    def body(session: LocalSession) -> bool:
        why = session.stack.wait_failure()
        if why is not None:
            failure.append(why)
            console.print(f"[red]caravan: the local stack stopped serving:[/red] {why}",
                          highlight=False)
        return why is None

    code = _with_session(config, console, body, on_interrupt=lambda: console.print("stopping ..."))
    console.print("stopped; no process left behind")
    return FAILED if failure else code


def demo(config: DemoConfig, console: Console) -> int:
    """The sweep (or the autoscaling scenario); 0 when every request succeeded."""

    def body(session: LocalSession) -> bool:
        if config.stack.autoscale:
            return run_autoscale_demo(session, console)
        return run_demo(session, console, config.levels, config.output)

    return _with_session(config.stack, console, body)


def _with_session(config: StackConfig, console: Console, body: Callable[[LocalSession], bool],
                  on_interrupt: Callable[[], None] | None = None) -> int:
    """Create and start the session, run ``body``, stop it; 0 when ``body`` returned
    True, 1 otherwise (start failure, interruption without ``on_interrupt``)."""
    _sigterm_as_interrupt()
    s = config
    session = LocalSession.create(s.spec, s.state_dir, s.time_scale, s.prometheus, s.autoscale)
    try:
        if not _start(session, console):
            return FAILED
        return 0 if body(session) else FAILED
    except KeyboardInterrupt:
        if on_interrupt is None:
            return FAILED
        on_interrupt()
        return 0
    finally:
        session.stop()


def _start(session: LocalSession, console: Console) -> bool:
    """Start the session and print its banner; False (reason printed) when it could not
    start (the caller's ``finally`` stops what was started)."""
    try:
        with console.status("starting replicas, control plane, Envoy ..."):
            session.start()
    except (StackError, RuntimeError) as exc:
        console.print(f"[red]caravan: could not start the local stack:[/red] {exc}", highlight=False)
        return False
    console.print(session.banner())
    return True


def _sigterm_as_interrupt() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
