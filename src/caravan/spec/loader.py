"""Reading a spec: YAML text or parsed data -> a validated ``PlatformSpec``, and back.

Every problem is reported at once, each with its path in the document, in a
``SpecError``. ``spec_document`` is the inverse of ``parse_spec``. Only ``load_spec``
does I/O (it reads one file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from caravan.spec.base import SpecError, format_errors
from caravan.spec.cross_field import cross_field_errors
from caravan.spec.platform import PlatformSpec


def parse_spec(data: Any, source: str = "<spec>") -> PlatformSpec:
    """Validate already-parsed YAML/JSON data. Raises SpecError listing every problem."""
    if not isinstance(data, dict):
        raise SpecError(source, [f"<root>: expected a mapping with a 'models' list, got {type(data).__name__}"])
    try:
        return PlatformSpec.model_validate(data)
    except ValidationError as exc:
        errors = format_errors(exc, data)
        errors += [e for e in cross_field_errors(data) if e not in errors]
        raise SpecError(source, errors) from None


# A spec is a few hundred nodes per model; anchors and aliases may repeat parts of it,
# but no document expands to more than this many nodes (a "billion laughs" alias bomb
# of 584 bytes expands to ~10^9 and took 25 s and 1.8 GB to validate before the cap).
MAX_EXPANDED_NODES = 100_000


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a document whose aliases would expand it beyond
    ``MAX_EXPANDED_NODES`` nodes, or that refers to itself, before building any object."""

    def construct_document(self, node: yaml.Node) -> Any:
        if _expanded_size(node, {}, set()) > MAX_EXPANDED_NODES:
            raise yaml.YAMLError(f"aliases expand the document to more than "
                                 f"{MAX_EXPANDED_NODES} nodes (an alias bomb?); refused")
        return super().construct_document(node)


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """Nodes in ``node`` with every alias expanded (memoised: linear in the document;
    stops counting past the cap). A node inside itself (``&a [*a]``) is refused."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise yaml.YAMLError("a node refers to itself through an alias (recursive data)")
    open_.add(key)
    total = 1
    children: list[yaml.Node] = []
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    for child in children:
        total += _expanded_size(child, sizes, open_)
        if total > MAX_EXPANDED_NODES:
            break
    open_.discard(key)
    sizes[key] = total
    return total


def load_spec(path: str | Path) -> PlatformSpec:
    """Read and validate a YAML spec file. Raises SpecError (with every problem) or OSError.
    Anchors and aliases are allowed while the document expands to at most
    ``MAX_EXPANDED_NODES`` nodes (``<yaml>: aliases expand ...`` otherwise)."""
    text = Path(path).read_text()
    try:
        data = yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise SpecError(str(path), [f"<yaml>: {exc}"]) from None
    except RecursionError:
        raise SpecError(str(path), ["<yaml>: nested too deeply"]) from None
    return parse_spec(data, str(path))


def spec_document(spec: PlatformSpec) -> dict[str, Any]:
    """``spec`` as a JSON-able document that ``parse_spec`` turns back into an equal spec:
    the fields that differ from their defaults, and each ``autoscaling`` section as it
    was written (every field given, a whole number without ``.0``)."""
    data: dict[str, Any] = spec.model_dump(mode="json", exclude_defaults=True)
    for i, m in enumerate(spec.models):
        if m.autoscaling is not None:
            data["models"][i]["autoscaling"] = _whole_numbers(
                m.autoscaling.model_dump(mode="json", exclude_unset=True))
    return data


def _whole_numbers(value: Any) -> Any:
    """``value`` with every whole float written as an int (``30.0`` -> ``30``)."""
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
