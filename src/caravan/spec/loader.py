"""Reading a spec: YAML text or parsed data -> a validated ``PlatformSpec``.

Every problem is reported at once, each with its path in the document, in a
``SpecError``. Only ``load_spec`` does I/O (it reads one file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from caravan.spec.base import SpecError, format_errors
from caravan.spec.models import PlatformSpec, cross_field_errors


def parse_spec(data: Any, source: str = "<spec>") -> PlatformSpec:
    """Validate already-parsed YAML/JSON data. Raises SpecError listing every problem."""
    if not isinstance(data, dict):
        raise SpecError(source, [f"<root>: expected a mapping with a 'models' list, got {type(data).__name__}"])
    try:
        spec = PlatformSpec.model_validate(data)
    except ValidationError as exc:
        errors = format_errors(exc)
        errors += [e for e in cross_field_errors(data) if e not in errors]
        raise SpecError(source, errors) from None
    extra = _validate_extensions(spec)
    if extra:
        raise SpecError(source, extra)
    return spec


def _validate_extensions(spec: PlatformSpec) -> list[str]:
    """Validate sections owned by other packages (autoscaling policies). The import is
    local because caravan.autoscaler.policy itself imports this module."""
    from caravan.autoscaler.policy import validate_policy

    errors: list[str] = []
    for i, m in enumerate(spec.models):
        if m.autoscaling is None:
            continue
        errors.extend(f"models[{i}].autoscaling.{e}" for e in validate_policy(m.autoscaling, m))
    return errors


def load_spec(path: str | Path) -> PlatformSpec:
    """Read and validate a YAML spec file. Raises SpecError (with every problem) or OSError."""
    text = Path(path).read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(str(path), [f"<yaml>: {exc}"]) from None
    return parse_spec(data, str(path))
