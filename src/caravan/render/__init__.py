"""Renderers: pure functions from a ``PlatformSpec`` to the files an operator runs.

Every renderer module exposes ``render(spec) -> dict[str, str]``: output path
(relative to the output directory, e.g. ``jobs/llama.nomad.hcl``) -> file text.
``catalog.RENDERERS`` lists them (statically); ``caravan render`` writes the union
(``catalog.render_all``).
The Nomad job model lives in ``caravan.nomad`` and monitoring-as-code in
``caravan.observability``; this package keeps Envoy's bootstrap, the Triton model
repository and the Dockerfiles.
"""

