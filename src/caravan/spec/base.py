"""The base every spec model shares, and the one way spec errors are reported (no I/O).

``Frozen`` models are immutable (safe to share between threads and tasks) and refuse
unknown fields. ``format_errors`` turns a pydantic ``ValidationError`` into one
``path: message`` line per problem (``models[1].autoscaling.max: must be >= min (1)``);
``SpecError`` carries those lines.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

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


_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "missing": "required field is missing",
    "extra_forbidden": "unknown field",
    "string_too_short": "must have at least {min_length} character(s)",
    "too_short": "must have at least {min_length} item(s)",
    "literal_error": "must be one of {expected}",
}
# Kinds whose message needs no "(got ...)": nothing to show, or a validator of ours
# that names the value itself.
_NO_INPUT = ("missing", "extra_forbidden", "union_tag_invalid", "union_tag_not_found",
             "string_too_short")
_FIELD = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*")


def _path(loc: tuple[int | str, ...], data: Any) -> str:
    """``models[1].autoscaling.max`` from pydantic's loc. A discriminated union's tag (the
    value of the ``name`` field, which pydantic puts in the loc) is left out: it is
    not a place in the document."""
    out, node = "", data
    for i, part in enumerate(loc):
        if (isinstance(part, str) and i < len(loc) - 1 and isinstance(node, dict)
                and part not in node and node.get("name") == part):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        node = _child(node, part)
    return out


def _child(node: Any, part: int | str) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list | tuple) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _message(err: ErrorDetails) -> str:
    """A short message for one pydantic error, with the offending value where useful."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "union_tag_invalid":
        key = str(ctx.get("discriminator", "name")).strip("'")
        return f"{key}: unknown {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"{str(ctx.get('discriminator', 'name')).strip(chr(39))}: required field is missing"
    if kind == "string_too_short" and ctx.get("min_length") == 1:
        return "must not be empty"
    template = _MESSAGES.get(kind)
    msg = template.format(**ctx) if template else str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    if kind not in (*_NO_INPUT, "value_error") and not isinstance(value, dict | list | tuple):
        msg += f" (got {value!r})"
    return msg


def format_errors(exc: ValidationError, data: Any = None) -> list[str]:
    """Turn a pydantic error into ``path: message`` lines, one per problem, in document
    order. ``data`` (the validated input) lets paths skip discriminated-union tags."""
    lines: list[str] = []
    for err in exc.errors():
        if _follows_item_errors(err):
            continue
        loc = _path(tuple(err["loc"]), data)
        for part in _message(err).split("\n"):
            # A model-level validator may name a sub-field itself ("max: ...").
            lines.append(_join(loc, part))
    return lines


def _follows_item_errors(err: ErrorDetails) -> bool:
    """pydantic counts a tuple's length after dropping the items that failed, so a long
    enough tuple with a bad item is also "too short": that line repeats the item's error."""
    given, ctx = err.get("input"), err.get("ctx") or {}
    return (err["type"] == "too_short" and isinstance(given, list | tuple)
            and len(given) >= int(ctx.get("min_length", 0)))


def _join(loc: str, msg: str) -> str:
    """Prefix ``msg`` with ``loc``; a message that names a sub-field ("max: ...",
    "autoscaling.max: ...") extends the path."""
    head, sep, rest = msg.partition(": ")
    if sep and _FIELD.fullmatch(head):
        return f"{loc}.{head}: {rest}" if loc else f"{head}: {rest}"
    return f"{loc}: {msg}" if loc else msg
