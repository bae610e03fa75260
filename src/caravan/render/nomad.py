"""Nomad jobs renderer: every job of the platform, as HCL (default) or API JSON. Pure.

``jobs(spec)`` is the one job model; ``render`` encodes it as ``jobs/<id>.nomad.hcl``
(for ``nomad job run``), ``render_json`` as ``jobs/<id>.nomad.json`` (the
``POST /v1/jobs`` body ``{"Job": ...}``, for ``curl`` or ``caravan deploy``).
``all_jobs`` adds the jobs other areas build on the same model (a module in
``JOB_MODULES`` with ``jobs(spec)``, e.g. Prometheus and Grafana): those modules
render their own files; ``caravan deploy`` registers them all.
"""

from __future__ import annotations

import importlib
import json

from caravan.render.job_hcl import job_hcl
from caravan.render.job_json import job_request
from caravan.render.jobmodel import Job
from caravan.render.platform_jobs import control_plane_job, envoy_job
from caravan.render.triton_job import triton_job
from caravan.spec import PlatformSpec

JOBS_DIR = "jobs"
JOB_MODULES = ("caravan.render.monitoring_jobs",)


def jobs(spec: PlatformSpec) -> tuple[Job, ...]:
    """Every job: one per model, then the control plane, then Envoy."""
    return (*(triton_job(spec, m) for m in spec.models), control_plane_job(spec), envoy_job(spec))


def all_jobs(spec: PlatformSpec) -> tuple[Job, ...]:
    """``jobs(spec)`` plus every job of ``JOB_MODULES`` that exist in this build."""
    found: list[Job] = list(jobs(spec))
    for name in JOB_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        found.extend(module.jobs(spec))
    return tuple(found)


def hcl_path(job: Job) -> str:
    return f"{JOBS_DIR}/{job.id}.nomad.hcl"


def render(spec: PlatformSpec) -> dict[str, str]:
    return {hcl_path(job): job_hcl(job) for job in jobs(spec)}


def render_json(spec: PlatformSpec) -> dict[str, str]:
    """``jobs/<id>.nomad.json`` for every job of ``jobs``."""
    return {f"{JOBS_DIR}/{job.id}.nomad.json": json.dumps(job_request(job), indent=2) + "\n"
            for job in jobs(spec)}
