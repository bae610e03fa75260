"""Encode a ``jobmodel.Job`` as a Nomad HCL2 jobspec (``nomad job run``-able). Pure.

Block and attribute names follow the jobspec reference
(https://developer.hashicorp.com/nomad/docs/job-specification). Durations are
written as Go duration strings ("30s", "5m", "1h").
"""

from __future__ import annotations

from caravan.nomad import hcl
from caravan.nomad.hcl import Attr, Block
from caravan.nomad.jobmodel import (
    AutoscalerCheck,
    AutoscalerPolicy,
    Check,
    DockerConfig,
    Job,
    MigrateStrategy,
    Network,
    Pairs,
    ReschedulePolicy,
    Resources,
    RestartPolicy,
    Scaling,
    Service,
    Task,
    TaskGroup,
    Template,
    UpdateStrategy,
)

Items = tuple[Attr | Block, ...]


def duration(seconds: int) -> str:
    """Go duration text for whole seconds: 3600 -> "1h", 300 -> "5m", 45 -> "45s"."""
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds and seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def _duration(seconds: int | None) -> str | None:
    return None if seconds is None else duration(seconds)


def job_hcl(job: Job) -> str:
    """The jobspec text for ``job``."""
    return hcl.dumps((_job(job),), header=job.comment)


def _opt(name: str, value: hcl.Value | None) -> Items:
    return () if value is None else (Attr(name, value),)


def _map(name: str, pairs: Pairs) -> Items:
    return (Block(name, (), tuple(Attr(k, v) for k, v in pairs)),) if pairs else ()


def _job(job: Job) -> Block:
    body: Items = (
        *_opt("region", job.region),
        Attr("namespace", job.namespace),
        Attr("type", job.type),
        Attr("datacenters", job.datacenters),
        Attr("priority", job.priority),
        *_map("meta", job.meta),
        *(_group(g) for g in job.groups),
    )
    return Block("job", (job.id,), body)


def _group(g: TaskGroup) -> Block:
    body: Items = (
        Attr("count", g.count),
        *_opt("shutdown_delay", _duration(g.shutdown_delay_s)),
        *_map("meta", g.meta),
        *(() if g.scaling is None else (_scaling(g.scaling),)),
        *(() if g.network is None else (_network(g.network),)),
        *(Block("volume", (v.name,), (Attr("type", v.type), Attr("source", v.source),
                                      Attr("read_only", v.read_only))) for v in g.volumes),
        *(_service(s) for s in g.services),
        *(() if g.update is None else (_update(g.update),)),
        *(() if g.migrate is None else (_migrate(g.migrate),)),
        *(() if g.restart is None else (_restart(g.restart),)),
        *(() if g.reschedule is None else (_reschedule(g.reschedule),)),
        *(_task(t) for t in g.tasks),
    )
    return Block("group", (g.name,), body)


def _scaling(s: Scaling) -> Block:
    policy = () if s.policy is None else (_policy(s.policy),)
    return Block("scaling", (), (Attr("enabled", s.enabled), Attr("min", s.min),
                                 Attr("max", s.max), *policy))


def _policy(p: AutoscalerPolicy) -> Block:
    """The Nomad Autoscaler's ``policy`` block (its own HCL schema; Nomad stores it)."""
    return Block("policy", (), (
        Attr("evaluation_interval", duration(p.evaluation_interval_s)),
        Attr("cooldown", duration(p.cooldown_s)),
        Attr("cooldown_on_scale_up", duration(p.cooldown_on_scale_up_s)),
        Attr("on_check_error", p.on_check_error),
        *(_autoscaler_check(c) for c in p.checks),
    ))


def _autoscaler_check(c: AutoscalerCheck) -> Block:
    return Block("check", (c.name,), (
        Attr("source", c.source), Attr("query", c.query),
        Attr("query_window", duration(c.query_window_s)),
        *_opt("group", c.group), *_opt("on_error", c.on_error),
        Block("strategy", (c.strategy,), tuple(Attr(k, v) for k, v in c.params)),
    ))


def _network(n: Network) -> Block:
    ports = tuple(
        Block("port", (p.label,), (*_opt("static", p.static), *_opt("to", p.to),
                                   *_opt("host_network", p.host_network)))
        for p in n.ports
    )
    return Block("network", (), (Attr("mode", n.mode), *ports))


def _service(s: Service) -> Block:
    body: Items = (
        Attr("name", s.name), Attr("provider", s.provider), Attr("port", s.port),
        Attr("tags", s.tags), *_map("meta", s.meta), *(_check(c) for c in s.checks),
    )
    return Block("service", (), body)


def _check(c: Check) -> Block:
    restart = c.check_restart
    body: Items = (
        Attr("name", c.name), Attr("type", c.type), *_opt("port", c.port), *_opt("path", c.path),
        *_opt("task", c.task), *_opt("command", c.command),
        *(() if not c.args else (Attr("args", c.args),)),
        Attr("interval", duration(c.interval_s)), Attr("timeout", duration(c.timeout_s)),
        *_opt("grpc_use_tls", c.grpc_use_tls or None), *_opt("tls_skip_verify", c.tls_skip_verify or None),
        *(() if restart is None else (Block("check_restart", (), (
            Attr("limit", restart.limit), Attr("grace", duration(restart.grace_s)),
            Attr("ignore_warnings", restart.ignore_warnings))),)),
    )
    return Block("check", (), body)


def _update(u: UpdateStrategy) -> Block:
    return Block("update", (), (
        Attr("max_parallel", u.max_parallel), Attr("health_check", u.health_check),
        Attr("min_healthy_time", duration(u.min_healthy_time_s)),
        Attr("healthy_deadline", duration(u.healthy_deadline_s)),
        Attr("progress_deadline", duration(u.progress_deadline_s)),
        Attr("canary", u.canary), Attr("auto_promote", u.auto_promote),
        Attr("auto_revert", u.auto_revert),
    ))


def _migrate(m: MigrateStrategy) -> Block:
    return Block("migrate", (), (
        Attr("max_parallel", m.max_parallel), Attr("health_check", m.health_check),
        Attr("min_healthy_time", duration(m.min_healthy_time_s)),
        Attr("healthy_deadline", duration(m.healthy_deadline_s)),
    ))


def _restart(r: RestartPolicy) -> Block:
    return Block("restart", (), (
        Attr("attempts", r.attempts), Attr("interval", duration(r.interval_s)),
        Attr("delay", duration(r.delay_s)), Attr("mode", r.mode),
    ))


def _reschedule(r: ReschedulePolicy) -> Block:
    return Block("reschedule", (), (
        Attr("delay", duration(r.delay_s)), Attr("delay_function", r.delay_function),
        Attr("max_delay", duration(r.max_delay_s)), Attr("unlimited", r.unlimited),
    ))


def _task(t: Task) -> Block:
    body: Items = (
        Attr("driver", t.driver),
        *_opt("kill_timeout", _duration(t.kill_timeout_s)),
        *_opt("kill_signal", t.kill_signal),
        _docker(t.config),
        *_map("env", t.env),
        *(Block("volume_mount", (), (Attr("volume", m.volume), Attr("destination", m.destination),
                                     Attr("read_only", m.read_only))) for m in t.volume_mounts),
        *(_template(tpl) for tpl in t.templates),
        _resources(t.resources),
    )
    return Block("task", (t.name,), body)


def _docker(c: DockerConfig) -> Block:
    return Block("config", (), (
        Attr("image", c.image),
        *(() if not c.entrypoint else (Attr("entrypoint", c.entrypoint),)),
        *_opt("command", c.command),
        *(() if not c.args else (Attr("args", c.args),)),
        *(() if not c.ports else (Attr("ports", c.ports),)),
        *_opt("network_mode", c.network_mode), *_opt("shm_size", c.shm_size),
    ))


def _template(t: Template) -> Block:
    return Block("template", (), (
        Attr("destination", t.destination), Attr("change_mode", t.change_mode),
        Attr("env", t.env), *_opt("perms", t.perms), *_opt("uid", t.uid), Attr("data", t.data),
    ))


def _resources(r: Resources) -> Block:
    devices = tuple(Block("device", (d.name,), (Attr("count", d.count),)) for d in r.devices)
    return Block("resources", (), (Attr("cpu", r.cpu_mhz), Attr("memory", r.memory_mb), *devices))
