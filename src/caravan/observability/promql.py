"""Find the metric names a PromQL expression reads (pure, no Prometheus needed).

A small tokenizer, not a full parser: it skips strings, label matchers ``{...}``,
ranges ``[...]``, label lists after ``by``/``without``/``on``/``ignoring``/
``group_left``/``group_right``, numbers and durations, Grafana variables (``$model``)
and function/aggregation names, and returns the remaining identifiers. Syntax is
checked elsewhere (by a real Prometheus); this only answers "which metrics".
"""

from __future__ import annotations

import re

from caravan.errors import ConfigError

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$\w+)
  | (?P<number>0x[0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:ms|s|m|h|d|w|y)*|\.\d+)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<open>[\[{(])
  | (?P<close>[\]})])
  | (?P<op>[-+*/%^=!<>~,@]+)
    """,
    re.VERBOSE,
)

_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = _LABEL_LIST_KEYWORDS | frozenset({
    "and", "or", "unless", "bool", "offset", "inf", "nan",
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile",
})


class PromQLSyntaxError(ConfigError):
    """The expression has a character the tokenizer does not know, or unbalanced brackets."""


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise PromQLSyntaxError(
                f"unexpected character {expr[pos]!r} at offset {pos} in {expr!r}")
        kind = m.lastgroup or ""
        if kind != "space":
            out.append((kind, m.group()))
        pos = m.end()
    return out


def _skip_group(tokens: list[tuple[str, str]], i: int, expr: str) -> int:
    """Index just past the bracket group opening at ``tokens[i]``."""
    depth = 0
    for j in range(i, len(tokens)):
        kind = tokens[j][0]
        depth += kind == "open"
        depth -= kind == "close"
        if depth == 0:
            return j + 1
    raise PromQLSyntaxError(f"unbalanced brackets in {expr!r}")


_PAIRS = {")": "(", "]": "[", "}": "{"}


def _check_balanced(tokens: list[tuple[str, str]], expr: str) -> None:
    stack: list[str] = []
    for kind, text in tokens:
        if kind == "open":
            stack.append(text)
        elif kind == "close" and (not stack or stack.pop() != _PAIRS[text]):
            raise PromQLSyntaxError(f"unmatched {text!r} in {expr!r}")
    if stack:
        raise PromQLSyntaxError(f"unclosed {stack[-1]!r} in {expr!r}")


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects, e.g. ``rate(a_total[1m]) / b`` -> ``{"a_total", "b"}``.

    Raises PromQLSyntaxError for characters PromQL does not use or unbalanced brackets.
    """
    tokens = _tokens(expr)
    _check_balanced(tokens, expr)
    names: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if kind == "open" and text in "[{":
            i = _skip_group(tokens, i, expr)
            continue
        if kind == "ident" and text in _LABEL_LIST_KEYWORDS and nxt == ("open", "("):
            i = _skip_group(tokens, i + 1, expr)
            continue
        if kind == "ident" and text.lower() not in _KEYWORDS and nxt != ("open", "("):
            names.add(text)
        i += 1
    return names
