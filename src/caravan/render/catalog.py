"""Every renderer ``caravan render`` runs, listed statically, and their union (pure).

Nomad jobs (platform, models, monitoring), the Triton model repository, Dockerfiles,
Envoy's bootstrap, Prometheus, Grafana.
"""

from __future__ import annotations

from typing import Protocol

from caravan.nomad import jobs as nomad_jobs
from caravan.observability import grafana, prometheus
from caravan.render import docker, envoy, triton
from caravan.spec import PlatformSpec


class Renderer(Protocol):
    """A module (or object) with a pure ``render(spec) -> {relative path: text}``."""

    def render(self, spec: PlatformSpec) -> dict[str, str]: ...


RENDERERS: tuple[Renderer, ...] = (nomad_jobs, triton, docker, envoy, prometheus, grafana)


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
