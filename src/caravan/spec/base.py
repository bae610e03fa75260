"""The base every spec model shares, and the one way spec errors are reported (no I/O).

``Frozen`` models are immutable (safe to share between threads and tasks) and refuse
unknown fields. ``format_errors`` turns a pydantic ``ValidationError`` into one
``path: message`` line per problem (``models[1].autoscaling.max: must be >= min (1)``);
``SpecError`` carries those lines.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, ValidationError

from caravan.errors import ConfigError


class Frozen(BaseModel):
    """Immutable, and unknown fields are errors (a typo in a spec is reported, not ignored)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class SpecError(ConfigError):
    """A spec failed to load or validate. ``errors`` holds one ``path: message`` per problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: {len(errors)} error(s)\n" + "\n".join(f"  {e}" for e in errors))


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def format_errors(exc: ValidationError) -> list[str]:
    """Turn a pydantic error into ``path: message`` lines, one per problem, in document order."""
    lines: list[str] = []
    for err in exc.errors():
        loc = _path(tuple(err["loc"]))
        msg = str(err["msg"]).removeprefix("Value error, ")
        for part in msg.split("\n"):
            # A model-level validator may name a sub-field itself ("max: ...").
            lines.append(_join(loc, part))
    return lines


def _join(loc: str, msg: str) -> str:
    """Prefix ``msg`` with ``loc``; a message that names a sub-field ("max: ...") extends the path."""
    if not loc:
        return msg
    head, sep, rest = msg.partition(": ")
    if sep and re.fullmatch(r"[a-z_][a-z0-9_]*", head):
        return f"{loc}.{head}: {rest}"
    return f"{loc}: {msg}"
