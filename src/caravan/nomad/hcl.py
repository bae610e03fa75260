"""A small, deterministic HCL2 writer (the subset Nomad jobspecs use).

Pure. ``Attr``/``Block`` trees in, text out: two-space indents, ``=`` aligned in
runs of one-line attributes (as ``nomad fmt`` does), strings ending in a newline
as ``<<EOT`` heredocs. Strings are escaped so HCL reads back exactly the given
value, except Nomad runtime interpolations (``${NOMAD_PORT_grpc}``, ``${attr.x}``,
``${node.x}``, ``${meta.x}``, ``${env.X}``), kept for Nomad to resolve when it
places the allocation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

Value = str | int | float | bool | tuple["Value", ...]

WRAP = 80  # longer lists are written one element per line
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_RUNTIME = re.compile(r"\$\{((NOMAD_[A-Za-z0-9_]+)|((attr|node|meta|env)\.[A-Za-z0-9_.-]+))\}")


@dataclass(frozen=True)
class Attr:
    name: str
    value: Value

    def __post_init__(self) -> None:
        if not _IDENT.match(self.name):
            raise ValueError(f"HCL attribute name {self.name!r} is not an identifier")


@dataclass(frozen=True)
class Block:
    type: str
    labels: tuple[str, ...]
    body: tuple[Attr | Block, ...]


def dumps(body: tuple[Attr | Block, ...], header: str = "") -> str:
    """HCL text for a top-level body; ``header`` lines become ``#`` comments."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    if lines:
        lines.append("")
    lines += _body(body, 0)
    return "\n".join(lines) + "\n"


def _body(items: tuple[Attr | Block, ...], depth: int) -> list[str]:
    out: list[str] = []
    pad = "  " * depth
    run: list[Attr] = []
    prev_block = False
    for item in items:
        if isinstance(item, Attr) and "\n" not in _value(item.value, pad):
            run.append(item)
            continue
        out += _attrs(run, pad)
        run = []
        if isinstance(item, Block):
            if out and (not prev_block or out[-1] != ""):
                out.append("")
            out += _block(item, depth)
            prev_block = True
        else:
            out.append(f"{pad}{item.name} = {_value(item.value, pad)}")
    out += _attrs(run, pad)
    return out


def _attrs(run: list[Attr], pad: str) -> list[str]:
    width = max((len(a.name) for a in run), default=0)
    return [f"{pad}{a.name.ljust(width)} = {_value(a.value, pad)}" for a in run]


def _value(value: Value, pad: str) -> str:
    """``_inline``, but a list longer than ``WRAP`` gets one element per line."""
    text = _inline(value)
    if isinstance(value, tuple) and len(text) > WRAP:
        items = "".join(f"{pad}  {_inline(v)},\n" for v in value)
        return f"[\n{items}{pad}]"
    return text


def _block(block: Block, depth: int) -> list[str]:
    pad = "  " * depth
    head = " ".join([block.type, *(_string(label) for label in block.labels)])
    if not block.body:
        return [f"{pad}{head} {{}}"]
    return [f"{pad}{head} {{", *_body(block.body, depth + 1), f"{pad}}}"]


def _inline(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    if value.endswith("\n"):
        return _heredoc(value)
    return _string(value)


def _escape_templates(text: str) -> str:
    """Escape HCL template sequences, keeping Nomad runtime interpolations."""
    kept: list[str] = []

    def keep(m: re.Match[str]) -> str:
        kept.append(m.group(0))
        return f"\x00{len(kept) - 1}\x00"

    text = _RUNTIME.sub(keep, text).replace("${", "$${").replace("%{", "%%{")
    return re.sub(r"\x00(\d+)\x00", lambda m: kept[int(m.group(1))], text)


def _string(text: str) -> str:
    body = json.dumps(text, ensure_ascii=False)[1:-1]
    return '"' + _escape_templates(body) + '"'


def _heredoc(text: str) -> str:
    """A ``<<EOT`` heredoc whose value is exactly ``text`` (ending in a newline)."""
    marker = "EOT"
    while marker in text.splitlines():
        marker += "X"
    return f"<<{marker}\n{_escape_templates(text)}{marker}"
