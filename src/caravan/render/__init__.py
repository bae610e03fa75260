"""Renderers: pure functions from a ``PlatformSpec`` to the files an operator runs.

Every renderer module exposes ``render(spec) -> dict[str, str]``: output path
(relative to the output directory, e.g. ``jobs/llama.nomad.hcl``) -> file text.
``RENDERERS`` lists them; ``caravan render`` writes the union.
"""
