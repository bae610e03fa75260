"""Renderers: pure functions from a ``PlatformSpec`` to the files an operator runs.

Every renderer module exposes ``render(spec) -> dict[str, str]``: output path
(relative to the output directory, e.g. ``jobs/llama.nomad.hcl``) -> file text.
``RENDERERS`` lists them; ``caravan render`` writes the union (``render_all``).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Protocol

from caravan.spec import PlatformSpec

# Renderers owned by other areas join once their module exists with a render().
_MODULES = (
    "caravan.render.nomad",
    "caravan.render.triton",
    "caravan.render.docker",
    "caravan.render.envoy",
    "caravan.render.prometheus",
    "caravan.render.grafana",
)


class Renderer(Protocol):
    """A module (or object) with a pure ``render(spec) -> {relative path: text}``."""

    def render(self, spec: PlatformSpec) -> dict[str, str]: ...


def _load(names: tuple[str, ...]) -> tuple[ModuleType, ...]:
    found = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # not built yet
                continue
            raise
        if callable(getattr(module, "render", None)):
            found.append(module)
    return tuple(found)


RENDERERS: tuple[ModuleType, ...] = _load(_MODULES)


def render_all(spec: PlatformSpec, renderers: tuple[Renderer, ...] | None = None) -> dict[str, str]:
    """The union of every renderer's files, sorted by path.
    Raises ValueError when two renderers produce the same path."""
    files: dict[str, str] = {}
    owner: dict[str, str] = {}
    for r in RENDERERS if renderers is None else renderers:
        name = getattr(r, "__name__", type(r).__name__)
        for path, text in r.render(spec).items():
            if path in files:
                raise ValueError(f"{path}: rendered by both {owner[path]} and {name}")
            files[path], owner[path] = text, name
    return dict(sorted(files.items()))
