"""Nomad jobs renderer: every job of the platform, as HCL (default) or API JSON. Pure.

``serving_jobs(spec)`` is the one job model; ``render`` encodes it as ``jobs/<id>.nomad.hcl``
(for ``nomad job run``), ``render_json`` as ``jobs/<id>.nomad.json`` (the
``POST /v1/jobs`` body ``{"Job": ...}``, for ``curl`` or ``caravan deploy``).
``all_jobs`` adds the monitoring jobs (Prometheus and Grafana,
``caravan.nomad.monitoring_jobs``), whose files ``render`` writes beside their
configuration (``prometheus/prometheus.nomad.{hcl,json}``, ``grafana/...``);
``caravan deploy`` registers them all.
"""

from __future__ import annotations

import json

from caravan.nomad.job_hcl import job_hcl
from caravan.nomad.job_json import job_request
from caravan.nomad.jobmodel import Job
from caravan.nomad.monitoring_jobs import grafana_job, job_files, prometheus_and_grafana, prometheus_job
from caravan.nomad.platform_jobs import control_plane_job, envoy_job
from caravan.nomad.triton_job import triton_job
from caravan.spec import PlatformSpec

JOBS_DIR = "jobs"


def serving_jobs(spec: PlatformSpec) -> tuple[Job, ...]:
    """The jobs that serve requests: one per model, then the control plane, then Envoy."""
    return (*(triton_job(spec, m) for m in spec.models), control_plane_job(spec), envoy_job(spec))


def all_jobs(spec: PlatformSpec) -> tuple[Job, ...]:
    """``serving_jobs(spec)`` plus the monitoring jobs (``prometheus_and_grafana``)."""
    return (*serving_jobs(spec), *prometheus_and_grafana(spec))


def hcl_path(job: Job) -> str:
    return f"{JOBS_DIR}/{job.id}.nomad.hcl"


def render(spec: PlatformSpec) -> dict[str, str]:
    """``jobs/<id>.nomad.hcl`` for every platform job, and the monitoring jobs' HCL and
    JSON in their own directories."""
    files = {hcl_path(job): job_hcl(job) for job in serving_jobs(spec)}
    files.update(job_files(prometheus_job(spec), "prometheus"))
    files.update(job_files(grafana_job(spec), "grafana"))
    return files


def render_json(spec: PlatformSpec) -> dict[str, str]:
    """``jobs/<id>.nomad.json`` for every job of ``jobs``."""
    return {f"{JOBS_DIR}/{job.id}.nomad.json": json.dumps(job_request(job), indent=2) + "\n"
            for job in serving_jobs(spec)}
