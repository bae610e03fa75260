"""Nomad jobs of the platform itself, built purely from the spec.

``caravan-control-plane``: group ``xds`` (``nomad.xds_replicas`` instances of
``caravan xds --consul``; Consul services ``caravan-xds`` with a grpc check, which
Envoy's bootstrap template lists, and ``caravan-xds-admin``) and group ``autoscaler``
(one ``caravan autoscale``; service ``caravan-autoscaler`` for its metrics; left out
when ``nomad.autoscaler`` is ``nomad-autoscaler``: the stock Nomad Autoscaler then runs
the policies rendered in the model jobs). The spec
reaches the tasks as a template (``local/platform.yaml``) with the allocation's
addresses; tokens come from the job's Nomad Variables (``secrets/caravan.env``; the
Consul token as the file ``secrets/consul.token``, swapped live on rotation);
the autoscaler finds Prometheus as Consul service ``prometheus``.

``envoy``: Envoy with its bootstrap from a template listing every ``caravan-xds``
instance (``nomad_templates.envoy_bootstrap``); static port ``envoy.listen_port`` (service
``caravan-envoy``). Envoy's admin listens on 127.0.0.1:``envoy.admin_port`` only and is
neither a Nomad port nor a Consul service; Prometheus and Consul's readiness check use
port ``stats`` on the node IP (service ``caravan-envoy-admin``, the name Prometheus
discovers), a listener that forwards only ``GET /stats/prometheus`` and ``GET /ready``
to the admin (``caravan.render.envoy.stats_listener``).
Both jobs use host networking (``network_mode = "host"``) so the processes bind
the allocation's ports and reach the node's Consul and Nomad agents on 127.0.0.1.
"""

from __future__ import annotations

from caravan.nomad import nomad_templates
from caravan.nomad.jobmodel import (
    Check,
    DockerConfig,
    Job,
    Network,
    Port,
    ReschedulePolicy,
    Resources,
    RestartPolicy,
    Service,
    Task,
    TaskGroup,
    Template,
    UpdateStrategy,
)
from caravan.observability.prometheus import ENVOY_SERVICE
from caravan.spec import PlatformSpec

CONTROL_PLANE_JOB = "caravan-control-plane"
ENVOY_JOB = "envoy"
PROMETHEUS_SERVICE = "prometheus"
SPEC_PATH = "local/platform.yaml"
# The caravan image's user (docker/caravan.Dockerfile): its tasks run as it, and the
# secret files Nomad renders for them are its own.
CARAVAN_UID = 10001
_HEADER = "Rendered by `caravan render` from the platform spec; do not edit by hand.\n"

_RESTART = RestartPolicy(attempts=10, interval_s=300, delay_s=15, mode="delay")
_RESCHEDULE = ReschedulePolicy(delay_s=30, max_delay_s=600)
SHUTDOWN_DELAY_S = 5  # seconds: every platform group with a service deregisters before it stops
_UPDATE = UpdateStrategy(max_parallel=1, min_healthy_time_s=10, healthy_deadline_s=120,
                         progress_deadline_s=300)


def internal_port(spec: PlatformSpec, label: str, to: int | None = None) -> Port:
    """A port on ``nomad.internal_network``: bound and registered on that host network's
    address only (Envoy's ingress is the one port on Nomad's default network)."""
    return Port(label, to=to, host_network=spec.nomad.internal_network)


def control_plane_job(spec: PlatformSpec) -> Job:
    """The xDS group, and Caravan's autoscaler unless the stock Nomad Autoscaler scales
    the model groups (``nomad.autoscaler``)."""
    groups: tuple[TaskGroup, ...] = (_xds_group(spec),)
    if spec.nomad.autoscaler == "caravan":
        groups += (_autoscaler_group(spec),)
    return Job(
        id=CONTROL_PLANE_JOB, datacenters=spec.nomad.datacenters, namespace=spec.nomad.namespace,
        region=spec.nomad.region, priority=70, groups=groups,
        comment=("Caravan control plane: xDS server(s) and the autoscaler.\n" + _HEADER +
                 f"Tokens: nomad var put nomad/jobs/{CONTROL_PLANE_JOB} "
                 "CONSUL_HTTP_TOKEN=... NOMAD_TOKEN=..."),
    )


def _spec_templates() -> tuple[Template, ...]:
    """The job's Nomad Variables as the environment, except the Consul token: it goes to
    a file (``CONSUL_HTTP_TOKEN_FILE``) that Nomad rewrites in place when the variable
    changes (``noop``: no restart) and the control plane re-reads every 0.25 s. Owned by
    the image's user, mode 0400."""
    token_file = f"/{nomad_templates.CONSUL_TOKEN_PATH}"
    return (
        Template("secrets/caravan.env",
                 nomad_templates.secrets_env(CONTROL_PLANE_JOB, token_file=token_file), env=True),
        Template(nomad_templates.CONSUL_TOKEN_PATH,
                 nomad_templates.job_var_item(CONTROL_PLANE_JOB, nomad_templates.CONSUL_TOKEN_ITEM),
                 change_mode="noop", perms="0400", uid=CARAVAN_UID),
    )


def _caravan_task(spec: PlatformSpec, name: str, args: tuple[str, ...],
                  entrypoint: tuple[str, ...] = (), extra: tuple[Template, ...] = ()) -> Task:
    """A task of the caravan image (``ENTRYPOINT ["caravan"]``): ``args`` are caravan's."""
    spec_yaml = nomad_templates.platform_yaml(spec, xds_ports=name == "xds")
    return Task(
        name=name,
        config=DockerConfig(image=spec.nomad.caravan_image, entrypoint=entrypoint, args=args,
                            network_mode="host"),
        templates=(Template(SPEC_PATH, spec_yaml),
                   *_spec_templates(), *extra),
        resources=Resources(cpu_mhz=500, memory_mb=512),
        kill_timeout_s=30,
    )


def _xds_group(spec: PlatformSpec) -> TaskGroup:
    args = ("xds", "--spec", f"/{SPEC_PATH}", "--consul", "--port", "${NOMAD_PORT_xds}",
            "--admin-port", "${NOMAD_PORT_admin}", "--node-id", "xds-${NOMAD_ALLOC_INDEX}")
    return TaskGroup(
        name="xds", count=spec.nomad.xds_replicas,
        network=Network((internal_port(spec, "xds"), internal_port(spec, "admin"))),
        services=(
            Service(nomad_templates.XDS_SERVICE, port="xds", tags=("caravan",), checks=(
                Check("xds-grpc-health", type="grpc", port="xds", interval_s=5, timeout_s=2),)),
            Service("caravan-xds-admin", port="admin", tags=("caravan",), checks=(
                Check("xds-admin-health", type="http", port="admin", path="/healthz",
                      interval_s=10, timeout_s=2),)),
        ),
        update=_UPDATE, restart=_RESTART, reschedule=_RESCHEDULE, shutdown_delay_s=SHUTDOWN_DELAY_S,
        tasks=(_caravan_task(spec, "xds", args),),
    )


def _autoscaler_group(spec: PlatformSpec) -> TaskGroup:
    prom = (f'{{{{ range $i, $s := service "{PROMETHEUS_SERVICE}" }}}}{{{{ if eq $i 0 }}}}'
            "PROMETHEUS_URL=http://{{ $s.Address }}:{{ $s.Port }}\n{{ end }}{{ end }}")
    script = ('exec caravan autoscale --spec /local/platform.yaml --prometheus "$PROMETHEUS_URL" '
              '--metrics-address "$NOMAD_IP_metrics" --metrics-port "$NOMAD_PORT_metrics"')
    # A shell expands $PROMETHEUS_URL, which comes from a Consul-service template.
    task = _caravan_task(spec, "autoscaler", (script,), entrypoint=("/bin/sh", "-c"),
                         extra=(Template("local/prometheus.env", prom, env=True),))
    return TaskGroup(
        name="autoscaler", count=1,  # one decision-maker: cooldowns live in its memory
        network=Network((internal_port(spec, "metrics"),)),
        services=(Service("caravan-autoscaler", port="metrics", tags=("caravan",), checks=(
            Check("autoscaler-tcp", type="tcp", port="metrics", interval_s=10, timeout_s=2),)),),
        update=_UPDATE, restart=_RESTART, reschedule=_RESCHEDULE,
        shutdown_delay_s=SHUTDOWN_DELAY_S,
        tasks=(task,),
    )


def envoy_job(spec: PlatformSpec) -> Job:
    """Envoy's job: ingress on ``envoy.listen_port``, stats on a dynamic port, admin on
    loopback only (see the module doc)."""
    boot = Template("local/envoy.json", nomad_templates.envoy_bootstrap(spec))
    task = Task(
        name="envoy",
        config=DockerConfig(image=spec.nomad.envoy_image, command="envoy",
                            args=("-c", "/local/envoy.json", "--use-dynamic-base-id"),
                            network_mode="host"),
        templates=(boot,),
        resources=Resources(cpu_mhz=2000, memory_mb=1024),
        kill_timeout_s=30,
    )
    return Job(
        id=ENVOY_JOB, datacenters=spec.nomad.datacenters, namespace=spec.nomad.namespace,
        region=spec.nomad.region, priority=70,
        groups=(TaskGroup(
            name="envoy", count=1,
            network=Network((Port("ingress", static=spec.envoy.listen_port),
                             internal_port(spec, "stats"))),
            services=(
                Service("caravan-envoy", port="ingress", tags=("caravan",), checks=(
                    Check("envoy-ingress-tcp", type="tcp", port="ingress", interval_s=10,
                          timeout_s=2),)),
                Service(ENVOY_SERVICE, port="stats", tags=("caravan",), checks=(
                    Check("envoy-ready", type="http", port="stats", path="/ready",
                          interval_s=10, timeout_s=2),)),
            ),
            update=_UPDATE, restart=_RESTART, reschedule=_RESCHEDULE,
            shutdown_delay_s=spec.nomad.drain_s,
            tasks=(task,),
        ),),
        comment="Envoy: the single gRPC inference endpoint, configured over ADS.\n" + _HEADER,
    )
