"""How ``caravan`` commands end: one mapping from Caravan's error tree to exit codes.

* 0: done.
* 1 (``FAILED``): the run failed (requests failed, a component did not start), or an
  external system refused (``BackendError``) or is not ready (``NotReadyError``).
* 1 (``INVALID_SPEC``) also for a spec that does not validate (``SpecError``), as
  ``caravan validate`` has always done.
* 2 (``BAD_CONFIG``): a flag, or a file it names, is wrong or unreadable
  (``ConfigError``; also plain ``ValueError``, which services not yet on the error
  tree still raise).

``errors_exit(prefix)`` wraps a command's call to its service: the error's message
goes to stderr after ``prefix`` and the process exits with the code above.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from caravan.errors import CaravanError, ConfigError
from caravan.spec import PlatformSpec, SpecError, load_spec

FAILED = 1
INVALID_SPEC = 1
BAD_CONFIG = 2


def exit_code(exc: BaseException) -> int:
    """The exit code for ``exc`` (see the module docstring)."""
    if isinstance(exc, SpecError):
        return INVALID_SPEC
    return BAD_CONFIG if isinstance(exc, ValueError) else FAILED


def read_spec(path: Path) -> PlatformSpec:
    """``load_spec(path)``; SpecError when invalid, ConfigError naming an unreadable file."""
    try:
        return load_spec(path)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


@contextmanager
def errors_exit(prefix: str) -> Iterator[None]:
    """Turn a ``CaravanError`` (or ValueError) raised inside into ``typer.Exit``."""
    try:
        yield
    except (CaravanError, ValueError) as exc:
        typer.echo(f"{prefix}: {exc}" if prefix else str(exc), err=True)
        raise typer.Exit(exit_code(exc)) from None
