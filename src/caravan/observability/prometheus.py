"""Prometheus configuration for Caravan, rendered from the platform spec (pure).

``render(spec)`` returns relative path -> file text for everything under
``prometheus/``: the production ``prometheus.yml`` (Consul service discovery),
recording and alert rules, and promtool unit tests for every alert.
``static_config(...)`` renders a config with static targets for ``caravan up``.

Production discovery (Consul services; the jobs that run them must register these).
Under Consul ACLs: every ``consul_sd_configs`` names its datacenter (``consul_datacenter``),
reads the token from a file (``authorization.credentials_file``, a bearer token) and keeps
only passing instances (``health_keep``); ``consul_acl_policy`` is the token's policy.

- ``<consul.service_prefix><model>`` (Triton replicas): scraped on the port in the
  service's meta ``metrics_port``; instances without it are dropped. Targets get
  the labels ``caravan_model``, ``replica`` (Consul service id) and ``node``.
- ``caravan-envoy-admin`` (Envoy admin, ``/stats/prometheus``), ``caravan-xds-admin``
  (control plane ``/metrics``), ``caravan-autoscaler`` (autoscaler ``/metrics``).

Never a ``model`` target label: Triton's own series carry ``model``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from caravan.observability.alert_tests import alert_test_files
from caravan.observability.alerts import alert_groups
from caravan.observability.metric_names import JOB_AUTOSCALER, JOB_ENVOY, JOB_TRITON, JOB_XDS
from caravan.observability.rules import recording_groups
from caravan.spec import ConsulSpec, PlatformSpec

ENVOY_SERVICE = "caravan-envoy-admin"
XDS_SERVICE = "caravan-xds-admin"
AUTOSCALER_SERVICE = "caravan-autoscaler"


CONFIG_PATH = "prometheus/prometheus.yml"
RECORDING_PATH = "prometheus/rules/caravan-recording.yml"
ALERTS_PATH = "prometheus/rules/caravan-alerts.yml"
TESTS_DIR = "prometheus/tests"

HEADER = "# Rendered by `caravan render` from the platform spec. Do not edit by hand.\n"


def to_yaml(doc: Any) -> str:
    """YAML text with the rendered-file header; long PromQL stays on one line."""
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=1_000_000, allow_unicode=True)


def consul_datacenter(spec: PlatformSpec) -> str:
    """The Consul datacenter Prometheus queries: ``consul.datacenter``, else the first of
    ``nomad.datacenters`` (Consul and Nomad both default to ``dc1``; name them alike or set
    ``consul.datacenter``). Always set: without it Prometheus asks the agent's
    ``/v1/agent/self`` first, which needs ``agent:read``, and retries it forever."""
    return spec.consul.datacenter or spec.nomad.datacenters[0]


def health_keep(consul: ConsulSpec) -> dict[str, Any]:
    """Scrape only instances Consul calls passing (and warning when ``allow_warning``, the
    ones that also get traffic): ``__meta_consul_health`` is the instance's aggregated
    check status, ``maintenance`` for a draining one (Prometheus' ``consul.go``)."""
    regex = "passing|warning" if consul.allow_warning else "passing"
    return {"source_labels": ["__meta_consul_health"], "regex": regex, "action": "keep"}


def _consul_sd(consul: ConsulSpec, services: list[str], token_file: str | None,
               datacenter: str) -> dict[str, Any]:
    sd: dict[str, Any] = {"server": consul.address, "scheme": consul.scheme,
                          "datacenter": datacenter, "services": services}
    if token_file:
        sd["authorization"] = {"credentials_file": token_file}
    if consul.ca_file:
        sd["tls_config"] = {"ca_file": consul.ca_file}
    return sd


def consul_acl_policy(spec: PlatformSpec) -> str:
    """HCL rules of Prometheus' Consul token: read every service it scrapes and every
    node (Consul drops health entries whose node the token may not read). No
    ``agent:read``: the config always names the datacenter, so Prometheus never asks
    ``/v1/agent/self``."""
    services = (ENVOY_SERVICE, XDS_SERVICE, AUTOSCALER_SERVICE)
    rules = [f'service_prefix "{spec.consul.service_prefix}" {{ policy = "read" }}']
    rules += [f'service "{name}" {{ policy = "read" }}' for name in services]
    rules.append('node_prefix "" { policy = "read" }')
    return "\n".join(rules) + "\n"


def triton_relabel(service_prefix: str) -> list[dict[str, Any]]:
    """Relabelling for Triton replicas: scrape meta ``metrics_port``, label the model."""
    return [
        {"source_labels": ["__meta_consul_service_metadata_metrics_port"],
         "regex": "", "action": "drop"},
        {"source_labels": ["__address__", "__meta_consul_service_metadata_metrics_port"],
         "regex": r"(.+):\d+;(\d+)", "replacement": "${1}:${2}", "target_label": "__address__"},
        {"source_labels": ["__meta_consul_service"], "regex": re.escape(service_prefix) + "(.+)",
         "target_label": "caravan_model"},
        {"source_labels": ["__meta_consul_service_id"], "target_label": "replica"},
        {"source_labels": ["__meta_consul_node"], "target_label": "node"},
    ]


def production_config(spec: PlatformSpec, consul_token_file: str | None = "",
                      datacenter: str | None = None) -> dict[str, Any]:
    """The production ``prometheus.yml`` as a dict (15 s scrape and evaluation).

    ``consul_token_file``: the file Prometheus reads Consul's ACL token from (sent as a
    bearer token); "" (default) means ``spec.consul.token_file``, None means no token.
    ``datacenter``: default ``consul_datacenter(spec)``. Every job keeps only the
    instances ``health_keep`` allows.
    """
    token = spec.consul.token_file if consul_token_file == "" else consul_token_file
    dc = datacenter or consul_datacenter(spec)
    services = [spec.service_name(m) for m in spec.models]
    component_jobs = [
        (JOB_ENVOY, ENVOY_SERVICE, "/stats/prometheus"),
        (JOB_XDS, XDS_SERVICE, "/metrics"),
        (JOB_AUTOSCALER, AUTOSCALER_SERVICE, "/metrics"),
    ]
    jobs: list[dict[str, Any]] = [{
        "job_name": JOB_TRITON, "metrics_path": "/metrics",
        "consul_sd_configs": [_consul_sd(spec.consul, services, token, dc)],
        "relabel_configs": [health_keep(spec.consul), *triton_relabel(spec.consul.service_prefix)],
    }]
    jobs += [
        {"job_name": job, "metrics_path": path,
         "consul_sd_configs": [_consul_sd(spec.consul, [service], token, dc)],
         "relabel_configs": [health_keep(spec.consul),
                             {"source_labels": ["__meta_consul_node"], "target_label": "node"}]}
        for job, service, path in component_jobs
    ]
    return {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": ["rules/caravan-recording.yml", "rules/caravan-alerts.yml"],
        "scrape_configs": jobs,
    }


def _seconds(value: float) -> str:
    ms = round(value * 1000)
    if ms < 1:
        raise ValueError(f"scrape_interval_s: must be >= 0.001 s (got {value})")
    return f"{ms}ms" if ms % 1000 else f"{ms // 1000}s"


def local_scrape_config(
    envoy_admin: str,
    *,
    replicas: Mapping[str, Sequence[str]] | None = None,
    replica_file: str | None = None,
    control_plane: str | None = None,
    autoscaler: str | None = None,
    rule_files: Sequence[str] = (),
    scrape_interval_s: float = 1.0,
) -> dict[str, Any]:
    """The one Prometheus config of a local stack (``caravan up`` and the live tests).

    Replicas come from ``replicas`` (model name -> metrics ``host:port``s, labelled
    ``caravan_model``) or from the file_sd JSON ``replica_file`` (re-read every 1 s,
    its groups carrying their own labels). ``rule_files`` are paths as Prometheus should
    read them (absolute, or relative to the config file). Scrape and evaluation every
    ``scrape_interval_s`` seconds (default 1 s, so short local runs get data).
    ValueError for an interval under 1 ms.
    """
    interval = _seconds(scrape_interval_s)
    jobs: list[dict[str, Any]] = [{
        "job_name": JOB_ENVOY, "metrics_path": "/stats/prometheus",
        "static_configs": [{"targets": [envoy_admin]}],
    }]
    for job, target in ((JOB_XDS, control_plane), (JOB_AUTOSCALER, autoscaler)):
        if target is not None:
            jobs.append({"job_name": job, "static_configs": [{"targets": [target]}]})
    groups = [{"targets": list(t), "labels": {"caravan_model": m}}
              for m, t in sorted((replicas or {}).items()) if t]
    if groups:
        jobs.append({"job_name": JOB_TRITON, "static_configs": groups})
    if replica_file is not None:
        jobs.append({"job_name": JOB_TRITON,
                     "file_sd_configs": [{"files": [replica_file], "refresh_interval": "1s"}]})
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": interval,
                   "evaluation_interval": interval},
        "rule_files": list(rule_files),
        "scrape_configs": jobs,
    }


def static_config(
    envoy_admin: str,
    replicas: Mapping[str, Sequence[str]],
    control_plane: str | None = None,
    autoscaler: str | None = None,
    rule_files: Sequence[str] = (),
    scrape_interval_s: float = 1.0,
) -> str:
    """``prometheus.yml`` text of ``local_scrape_config`` with static replica targets."""
    return to_yaml(local_scrape_config(
        envoy_admin, replicas=replicas, control_plane=control_plane, autoscaler=autoscaler,
        rule_files=rule_files, scrape_interval_s=scrape_interval_s))


def render(spec: PlatformSpec) -> dict[str, str]:
    """Relative path -> text of every Prometheus artefact for ``spec`` (deterministic).
    The Nomad job that runs it is rendered by ``caravan.nomad.jobs``."""
    out = {
        CONFIG_PATH: to_yaml(production_config(spec)),
        RECORDING_PATH: to_yaml({"groups": recording_groups(spec)}),
        ALERTS_PATH: to_yaml({"groups": alert_groups()}),
    }
    for name, doc in alert_test_files(spec).items():
        out[f"{TESTS_DIR}/{name}"] = to_yaml(doc)
    return out
