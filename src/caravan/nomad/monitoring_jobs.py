"""Nomad jobs for Prometheus and Grafana, built on the render job model (pure).

``prometheus``: the upstream ``prom/prometheus`` image (Debian's build lacks Consul
SD) with the rendered ``prometheus.yml`` and rule files as templates; Consul service
``prometheus`` (the name the autoscaler and Grafana look up), ready check ``/-/ready``.
Under Consul ACLs (``consul.token_file`` set) its Consul token comes from the job's Nomad
Variable ``CONSUL_HTTP_TOKEN`` into ``secrets/consul.token`` (the config's
``credentials_file``); the config's Consul datacenter is ``consul.datacenter`` or the
allocation's ``NOMAD_DC``, so Prometheus never needs ``agent:read``.
Its TSDB lives in the allocation directory: it survives restarts, not rescheduling.

``grafana``: ``grafana/grafana-oss`` with the Prometheus datasource (URL from the
Consul service ``prometheus``) and Caravan's dashboards provisioned from templates;
Consul service ``grafana``, check ``/api/health``. The admin password comes from the
job's Nomad Variables (``GF_SECURITY_ADMIN_PASSWORD``), never from a rendered file.

Both use host networking (``network_mode = "host"``), like the platform jobs, so
Prometheus reaches the node's Consul agent and every replica's metrics port.
File texts are embedded as consul-template ``template`` blocks; their literal ``{{``
(Prometheus annotations, Grafana legends) are escaped by ``template_literal``.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from caravan.nomad import nomad_templates
from caravan.nomad.jobmodel import (
    Check,
    DockerConfig,
    Job,
    Network,
    Resources,
    RestartPolicy,
    Service,
    Task,
    TaskGroup,
    Template,
)
from caravan.nomad.nomad_templates import CONSUL_TOKEN_PATH, template_literal
from caravan.nomad.platform_jobs import PROMETHEUS_SERVICE, SHUTDOWN_DELAY_S, internal_port
from caravan.observability import alerts, rules
from caravan.observability import grafana as g
from caravan.observability import prometheus as prom
from caravan.spec import PlatformSpec

PROMETHEUS_IMAGE = "prom/prometheus:v2.53.0"
GRAFANA_IMAGE = "grafana/grafana-oss:11.1.0"
PROMETHEUS_JOB = "prometheus"
GRAFANA_JOB = "grafana"
GRAFANA_SERVICE = "grafana"
GRAFANA_START = "/run.sh"  # the grafana-oss image's entrypoint
NOMAD_DC_ACTION = '{{ env "NOMAD_DC" }}'
_NOMAD_DC_MARK = "caravan-nomad-dc"  # replaced by NOMAD_DC_ACTION after escaping
_HEADER = "Rendered by `caravan render` from the platform spec; do not edit by hand.\n"
_RESTART = RestartPolicy(attempts=10, interval_s=300, delay_s=15, mode="delay")


def _file(destination: str, text: str, change_mode: str = "restart") -> Template:
    return Template(destination, template_literal(text), change_mode=change_mode)


def _consul_token_template(job_id: str) -> Template:
    """``secrets/consul.token`` from the job's Nomad Variable ``CONSUL_HTTP_TOKEN``
    (``nomad var put nomad/jobs/<job> CONSUL_HTTP_TOKEN=...``). ``nomadVar`` waits until
    the variable exists, so Prometheus never starts with an empty token."""
    data = f'{{{{ with nomadVar "nomad/jobs/{job_id}" }}}}{{{{ .CONSUL_HTTP_TOKEN }}}}{{{{ end }}}}'
    return Template(CONSUL_TOKEN_PATH, data)


def _prometheus_config(spec: PlatformSpec, token_file: str | None) -> Template:
    """The production config as a template. Its Consul datacenter is ``consul.datacenter``
    or, when unset, the allocation's own datacenter (``NOMAD_DC``: the local Consul agent's,
    when Consul and Nomad datacenters share names), rendered by Nomad."""
    dc = spec.consul.datacenter or _NOMAD_DC_MARK
    config = prom.to_yaml(prom.production_config(spec, consul_token_file=token_file,
                                                 datacenter=dc))
    data = template_literal(config).replace(_NOMAD_DC_MARK, NOMAD_DC_ACTION)
    return Template("local/prometheus.yml", data)


def prometheus_job(spec: PlatformSpec) -> Job:
    """The Prometheus job: production config, Caravan's rules, Consul service ``prometheus``."""
    token_file = f"/{CONSUL_TOKEN_PATH}" if spec.consul.token_file else None
    templates = [
        _prometheus_config(spec, token_file),
        _file(
            "local/rules/caravan-recording.yml",
            prom.to_yaml({"groups": rules.recording_groups(spec)}),
        ),
        _file("local/rules/caravan-alerts.yml", prom.to_yaml({"groups": alerts.alert_groups()})),
    ]
    if token_file:
        templates.append(_consul_token_template(PROMETHEUS_JOB))
    task = Task(
        name="prometheus",
        config=DockerConfig(
            image=PROMETHEUS_IMAGE,
            network_mode="host",
            args=(
                "--config.file=/local/prometheus.yml",
                "--storage.tsdb.path=/alloc/data/prometheus",
                "--storage.tsdb.retention.time=15d",
                # the internal network's address; no --web.enable-lifecycle (POST
                # /-/quit, /-/reload): a new config restarts the task (template change_mode)
                "--web.listen-address=${NOMAD_ADDR_http}",
            ),
        ),
        templates=tuple(templates),
        resources=Resources(cpu_mhz=1000, memory_mb=2048),
        kill_timeout_s=30,
    )
    service = Service(
        PROMETHEUS_SERVICE,
        port="http",
        tags=("caravan", "monitoring"),
        checks=(
            Check(
                "prometheus-ready",
                type="http",
                port="http",
                path="/-/ready",
                interval_s=10,
                timeout_s=2,
            ),
        ),
    )
    return _job(PROMETHEUS_JOB, spec, _group(spec, "prometheus", service, task),
                "Prometheus: scrapes replicas, Envoy, control plane.")


def grafana_job(spec: PlatformSpec, dashboards_dir: str = "/local/dashboards") -> Job:
    """The Grafana job: datasource + dashboards provisioned, Consul service ``grafana``."""
    prom_url = (
        f'{{{{ range $i, $s := service "{PROMETHEUS_SERVICE}" }}}}{{{{ if eq $i 0 }}}}'
        f"{g.PROMETHEUS_URL_ENV}=http://{{{{ $s.Address }}}}:{{{{ $s.Port }}}}\n"
        "{{ end }}{{ end }}"
    )
    files = [
        _file(
            "local/provisioning/datasources/prometheus.yml",
            prom.to_yaml(g.datasource_provisioning()),
        ),
        _file(
            "local/provisioning/dashboards/caravan.yml",
            prom.to_yaml(g.dashboard_provider(dashboards_dir)),
        ),
        *(
            _file(str(PurePosixPath("local/dashboards") / name), g.json_text(doc), "noop")
            for name, doc in g.dashboards().items()
        ),
    ]
    task = Task(
        name="grafana",
        config=DockerConfig(image=GRAFANA_IMAGE, network_mode="host",
                            entrypoint=("/bin/sh", "-c"), args=(grafana_start_script(),)),
        env=(
            ("GF_SERVER_HTTP_ADDR", "${NOMAD_IP_http}"),
            ("GF_SERVER_HTTP_PORT", "${NOMAD_PORT_http}"),
            ("GF_PATHS_PROVISIONING", "/local/provisioning"),
            ("GF_PATHS_DATA", "/alloc/data/grafana"),
        ),
        templates=(
            Template("local/prometheus.env", prom_url, env=True),
            Template("secrets/grafana.env", nomad_templates.secrets_env(GRAFANA_JOB), env=True),
            *files,
        ),
        resources=Resources(cpu_mhz=500, memory_mb=512),
        kill_timeout_s=30,
    )
    service = Service(
        GRAFANA_SERVICE,
        port="http",
        tags=("caravan", "monitoring"),
        checks=(
            Check(
                "grafana-health",
                type="http",
                port="http",
                path="/api/health",
                interval_s=10,
                timeout_s=2,
            ),
        ),
    )
    return _job(GRAFANA_JOB, spec, _group(spec, "grafana", service, task),
                "Grafana: Caravan's dashboards over Prometheus.")


def grafana_start_script(start: str = GRAFANA_START) -> str:
    """``sh -c`` source that starts Grafana (the image's ``/run.sh``) only with an admin
    password from the job's Nomad Variables (``GF_SECURITY_ADMIN_PASSWORD``, loaded by
    the ``secrets/grafana.env`` template): unset, empty or ``admin`` exits 78 with the
    fix, so Grafana never comes up with admin/admin. ``$VAR`` without braces: Nomad
    would interpolate ``${...}`` into the arguments, putting the password in them."""
    var = "GF_SECURITY_ADMIN_PASSWORD"
    return (f'if [ -z "${var}" ] || [ "${var}" = admin ]; then '
            f"echo 'grafana: refusing to start without an admin password: nomad var put "
            f"nomad/jobs/{GRAFANA_JOB} {var}=...' >&2; exit 78; fi; exec {start}")


def _group(spec: PlatformSpec, name: str, service: Service, task: Task) -> TaskGroup:
    """One instance on one dynamic ``http`` port (on ``nomad.internal_network``),
    deregistered before it stops."""
    return TaskGroup(name=name, count=1, network=Network((internal_port(spec, "http"),)),
                     services=(service,),
                     restart=_RESTART, shutdown_delay_s=SHUTDOWN_DELAY_S, tasks=(task,))


def _job(job_id: str, spec: PlatformSpec, group: TaskGroup, what: str) -> Job:
    return Job(
        id=job_id,
        datacenters=spec.nomad.datacenters,
        namespace=spec.nomad.namespace,
        region=spec.nomad.region,
        priority=60,
        groups=(group,),
        comment=f"{what}\n{_HEADER}",
    )


def prometheus_and_grafana(spec: PlatformSpec) -> tuple[Job, ...]:
    """Both monitoring jobs."""
    return (prometheus_job(spec), grafana_job(spec))


def job_files(job: Job, directory: str) -> dict[str, str]:
    """``<directory>/<id>.nomad.hcl`` (``nomad job run``) and ``<id>.nomad.json``
    (the ``POST /v1/jobs`` body) for ``job``."""
    import json

    from caravan.nomad.job_hcl import job_hcl
    from caravan.nomad.job_json import job_request

    return {
        f"{directory}/{job.id}.nomad.hcl": job_hcl(job),
        f"{directory}/{job.id}.nomad.json": json.dumps(job_request(job), indent=2) + "\n",
    }
