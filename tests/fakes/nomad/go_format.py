"""Go's text formatting, as the Nomad fake's error texts and diffs need it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.fakes.nomad.api import NS


def multierror(errs: list[str]) -> str:
    """hashicorp/go-multierror ``ListFormatFunc``."""
    if len(errs) == 1:
        return f"1 error occurred:\n\t* {errs[0]}\n\n"
    points = "\n\t".join(f"* {e}" for e in errs)
    return f"{len(errs)} errors occurred:\n\t{points}\n\n"


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String`` for whole milliseconds and up: 1h0m0s, 25m0s, 30s, 500ms."""
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < NS:
        return f"{sign}{ns // 1_000_000}ms"
    h, rest = divmod(ns, 3600 * NS)
    m, rest = divmod(rest, 60 * NS)
    s = rest / NS
    sec = f"{s:.9f}".rstrip("0").rstrip(".")
    if h:
        return f"{sign}{h}h{m}m{sec}s"
    return f"{sign}{m}m{sec}s" if m else f"{sign}{sec}s"


def go_value(v: Any) -> str:
    """``fmt.Sprintf("%v", v)`` of a value in a ``map[string]interface{}`` as Go decodes
    JSON into it: every number is a float64, so 8589934592 prints as 8.589934592e+09."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return _go_float(float(v))
    return "" if v is None else str(v)


def go_typed(v: Any) -> str:
    """``%v`` of a typed struct field (``flatmap``'s Int/Bool/String cases)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return _go_float(v)
    return "" if v is None else str(v)


def _go_float(f: float) -> str:
    """strconv ``FormatFloat(f, 'g', -1, 64)``: %e when the exponent is < -4 or >= 6."""
    if f == 0:
        return "0"
    _sign, digits, exponent = Decimal(repr(abs(f))).normalize().as_tuple()
    text = "".join(str(d) for d in digits)
    exp = len(text) + int(exponent) - 1
    neg = "-" if f < 0 else ""
    if exp < -4 or exp >= 6:
        mant = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{neg}{mant}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    plain = repr(abs(f))
    return neg + (plain[:-2] if plain.endswith(".0") else plain)

