"""Encode a ``jobmodel.Job`` as Nomad API JSON (``POST /v1/jobs`` body ``{"Job": ...}``). Pure.

Field names are the API's PascalCase (``TaskGroups``, ``PortLabel``, ``MemoryMB``);
durations are integer nanoseconds, as the API's ``time.Duration`` fields expect.
The docker driver's ``Config`` map keeps its lowercase keys, as in HCL.
"""

from __future__ import annotations

from typing import Any

from caravan.nomad.job_hcl import duration
from caravan.nomad.jobmodel import (
    AutoscalerCheck,
    AutoscalerPolicy,
    Check,
    DockerConfig,
    Job,
    Network,
    Pairs,
    Port,
    Service,
    Task,
    TaskGroup,
    Template,
)

NS_PER_S = 1_000_000_000
Json = dict[str, Any]


def ns(seconds: int) -> int:
    """Seconds -> nanoseconds (the API's duration unit)."""
    return seconds * NS_PER_S


def job_request(job: Job) -> Json:
    """The register/plan request body: ``{"Job": {...}}``."""
    return {"Job": job_json(job)}


def job_json(job: Job) -> Json:
    out: Json = {"ID": job.id, "Name": job.id, "Type": job.type, "Namespace": job.namespace,
                 "Datacenters": list(job.datacenters), "Priority": job.priority}
    if job.region is not None:
        out["Region"] = job.region
    if job.meta:
        out["Meta"] = dict(job.meta)
    out["TaskGroups"] = [_group(g) for g in job.groups]
    return out


def _group(g: TaskGroup) -> Json:
    out: Json = {"Name": g.name, "Count": g.count}
    if g.shutdown_delay_s is not None:
        out["ShutdownDelay"] = ns(g.shutdown_delay_s)
    if g.meta:
        out["Meta"] = dict(g.meta)
    if g.scaling is not None:
        out["Scaling"] = {"Enabled": g.scaling.enabled, "Min": g.scaling.min, "Max": g.scaling.max}
        if g.scaling.policy is not None:
            out["Scaling"]["Policy"] = policy_json(g.scaling.policy)
    if g.network is not None:
        out["Networks"] = [_network(g.network)]
    if g.volumes:
        out["Volumes"] = {v.name: {"Name": v.name, "Type": v.type, "Source": v.source,
                                   "ReadOnly": v.read_only} for v in g.volumes}
    if g.services:
        out["Services"] = [_service(s) for s in g.services]
    if g.update is not None:
        u = g.update
        out["Update"] = {"MaxParallel": u.max_parallel, "HealthCheck": u.health_check,
                         "MinHealthyTime": ns(u.min_healthy_time_s),
                         "HealthyDeadline": ns(u.healthy_deadline_s),
                         "ProgressDeadline": ns(u.progress_deadline_s), "Canary": u.canary,
                         "AutoPromote": u.auto_promote, "AutoRevert": u.auto_revert}
    if g.migrate is not None:
        m = g.migrate
        out["Migrate"] = {"MaxParallel": m.max_parallel, "HealthCheck": m.health_check,
                          "MinHealthyTime": ns(m.min_healthy_time_s),
                          "HealthyDeadline": ns(m.healthy_deadline_s)}
    if g.restart is not None:
        r = g.restart
        out["RestartPolicy"] = {"Attempts": r.attempts, "Interval": ns(r.interval_s),
                                "Delay": ns(r.delay_s), "Mode": r.mode}
    if g.reschedule is not None:
        s = g.reschedule
        out["ReschedulePolicy"] = {"Delay": ns(s.delay_s), "DelayFunction": s.delay_function,
                                   "MaxDelay": ns(s.max_delay_s), "Unlimited": s.unlimited}
    out["Tasks"] = [_task(t) for t in g.tasks]
    return out


def policy_json(p: AutoscalerPolicy) -> Json:
    """The ``Policy`` map as Nomad stores an HCL ``policy`` block: attributes as given
    (durations as strings), each labelled block a list of one-key maps of lists
    (nomad-autoscaler ``policy/nomad/test-fixtures/full-scaling.json.golden``)."""
    return {"evaluation_interval": duration(p.evaluation_interval_s),
            "cooldown": duration(p.cooldown_s),
            "cooldown_on_scale_up": duration(p.cooldown_on_scale_up_s),
            "on_check_error": p.on_check_error,
            "check": [{c.name: [_autoscaler_check(c)]} for c in p.checks]}


def _autoscaler_check(c: AutoscalerCheck) -> Json:
    out: Json = {"source": c.source, "query": c.query, "query_window": duration(c.query_window_s)}
    if c.group is not None:
        out["group"] = c.group
    if c.on_error is not None:
        out["on_error"] = c.on_error
    out["strategy"] = [{c.strategy: [dict(c.params)]}]
    return out


def _port(p: Port) -> Json:
    out: Json = {"Label": p.label}
    if p.static is not None:
        out["Value"] = p.static
    if p.to is not None:
        out["To"] = p.to
    if p.host_network is not None:
        out["HostNetwork"] = p.host_network
    return out


def _network(n: Network) -> Json:
    dynamic = [_port(p) for p in n.ports if p.static is None]
    reserved = [_port(p) for p in n.ports if p.static is not None]
    out: Json = {"Mode": n.mode}
    if dynamic:
        out["DynamicPorts"] = dynamic
    if reserved:
        out["ReservedPorts"] = reserved
    return out


def _service(s: Service) -> Json:
    out: Json = {"Name": s.name, "Provider": s.provider, "PortLabel": s.port, "Tags": list(s.tags)}
    if s.meta:
        out["Meta"] = dict(s.meta)
    if s.checks:
        out["Checks"] = [_check(c) for c in s.checks]
    return out


def _check(c: Check) -> Json:
    out: Json = {"Name": c.name, "Type": c.type}
    if c.port is not None:
        out["PortLabel"] = c.port
    if c.path is not None:
        out["Path"] = c.path
    if c.task is not None:
        out["TaskName"] = c.task
    if c.command is not None:
        out["Command"] = c.command
    if c.args:
        out["Args"] = list(c.args)
    out["Interval"] = ns(c.interval_s)
    out["Timeout"] = ns(c.timeout_s)
    if c.grpc_use_tls:
        out["GRPCUseTLS"] = True
    if c.tls_skip_verify:
        out["TLSSkipVerify"] = True
    if c.check_restart is not None:
        r = c.check_restart
        out["CheckRestart"] = {"Limit": r.limit, "Grace": ns(r.grace_s),
                               "IgnoreWarnings": r.ignore_warnings}
    return out


def _template(t: Template) -> Json:
    out: Json = {"DestPath": t.destination, "ChangeMode": t.change_mode, "Envvars": t.env}
    if t.perms is not None:
        out["Perms"] = t.perms
    if t.uid is not None:
        out["Uid"] = t.uid
    out["EmbeddedTmpl"] = t.data
    return out


def _task(t: Task) -> Json:
    out: Json = {"Name": t.name, "Driver": t.driver}
    if t.kill_timeout_s is not None:
        out["KillTimeout"] = ns(t.kill_timeout_s)
    if t.kill_signal is not None:
        out["KillSignal"] = t.kill_signal
    out["Config"] = _docker(t.config)
    if t.env:
        out["Env"] = _pairs(t.env)
    if t.volume_mounts:
        out["VolumeMounts"] = [{"Volume": m.volume, "Destination": m.destination,
                                "ReadOnly": m.read_only} for m in t.volume_mounts]
    if t.templates:
        out["Templates"] = [_template(tpl) for tpl in t.templates]
    res: Json = {"CPU": t.resources.cpu_mhz, "MemoryMB": t.resources.memory_mb}
    if t.resources.devices:
        res["Devices"] = [{"Name": d.name, "Count": d.count} for d in t.resources.devices]
    out["Resources"] = res
    return out


def _docker(c: DockerConfig) -> Json:
    out: Json = {"image": c.image}
    if c.entrypoint:
        out["entrypoint"] = list(c.entrypoint)
    if c.command is not None:
        out["command"] = c.command
    if c.args:
        out["args"] = list(c.args)
    if c.ports:
        out["ports"] = list(c.ports)
    if c.network_mode is not None:
        out["network_mode"] = c.network_mode
    if c.shm_size is not None:
        out["shm_size"] = c.shm_size
    return out


def _pairs(pairs: Pairs) -> dict[str, str]:
    return dict(pairs)
