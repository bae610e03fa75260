"""The Nomad job model and its two encodings.

Every rendered HCL file parses with python-hcl2 and, normalised by an independent
HCL -> API mapping (snake_case blocks -> PascalCase keys, labelled blocks -> Name,
Go durations -> ns), equals its API JSON encoding. Plus the invariants operators
rely on (port labels, GPUs, replica bounds, unique services).
"""

from __future__ import annotations

import re
from typing import Any

import hcl2
import pytest
from hcl2.utils import SerializationOptions

from caravan.nomad import jobs as nomad
from caravan.nomad.job_json import job_json
from caravan.nomad.jobmodel import Job
from caravan.spec import PlatformSpec, load_spec, parse_spec

OPTS = SerializationOptions(with_comments=False, explicit_blocks=True,
                            preserve_heredocs=False, strip_string_quotes=True)

# HCL name -> API key, where not a plain snake_case -> PascalCase conversion.
RENAMES = {
    "group": "TaskGroups", "task": "Tasks", "service": "Services", "check": "Checks",
    "template": "Templates", "volume_mount": "VolumeMounts", "device": "Devices",
    "network": "Networks", "restart": "RestartPolicy", "reschedule": "ReschedulePolicy",
    "cpu": "CPU", "memory": "MemoryMB", "port": "PortLabel", "data": "EmbeddedTmpl",
    "destination@template": "DestPath", "env@template": "Envvars",
    "grpc_use_tls": "GRPCUseTLS", "tls_skip_verify": "TLSSkipVerify",  # api/services.go
    "task@check": "TaskName",
}
DURATIONS = {"shutdown_delay", "kill_timeout", "interval", "timeout", "delay", "max_delay",
             "min_healthy_time", "healthy_deadline", "progress_deadline", "grace"}
UNIT_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
LABEL_KEYS = {"group": "Name", "task": "Name", "device": "Name"}


def _pascal(name: str, parent: str) -> str:
    if f"{name}@{parent}" in RENAMES:
        return RENAMES[f"{name}@{parent}"]
    if name in RENAMES:
        return RENAMES[name]
    return "".join(part.capitalize() for part in name.split("_"))


def _ns(text: str) -> int:
    m = re.fullmatch(r"(\d+)([smh])", text)
    assert m, f"not a Go duration: {text!r}"
    return int(m.group(1)) * UNIT_NS[m.group(2)]


def _blocks(value: Any) -> list[dict[str, Any]]:
    return [{k: v for k, v in b.items() if k != "__is_block__"} for b in value]


def _labelled(blocks: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [next(iter(b.items())) for b in blocks]


def normalise(body: dict[str, Any], parent: str) -> dict[str, Any]:
    """One HCL block body -> the API object it means."""
    out: dict[str, Any] = {}
    for name, value in body.items():
        if name == "__is_block__":
            continue
        if parent == "check" and name == "task":  # an attribute here, not a task block
            out["TaskName"] = value
        elif parent == "scaling" and name == "policy":  # the Nomad Autoscaler's own schema
            out["Policy"] = _policy_map(_blocks(value)[0])
        elif parent == "task" and name in ("config", "env", "resources"):
            out[_pascal(name, parent)] = _task_map(name, _blocks(value)[0])
        elif name in ("meta",):
            out["Meta"] = _blocks(value)[0]
        elif name == "volume" and parent == "group":
            out["Volumes"] = {label: {"Name": label, **normalise(b, "volume")}
                              for label, b in _labelled(_blocks(value))}
        elif name == "network":
            out["Networks"] = [_network(b) for b in _blocks(value)]
        elif name in LABEL_KEYS:
            out[_pascal(name, parent)] = [{"Name": label, **normalise(b, name)}
                                          for label, b in _labelled(_blocks(value))]
        elif name in ("scaling", "update", "migrate", "restart", "reschedule", "check_restart"):
            out[_pascal(name, parent)] = normalise(_blocks(value)[0], name)
        elif name in ("service", "check", "template", "volume_mount"):
            out[_pascal(name, parent)] = [normalise(b, name) for b in _blocks(value)]
        elif name in DURATIONS:
            out[_pascal(name, parent)] = _ns(value)
        else:
            out[_pascal(name, parent)] = value
    return out


def _policy_map(body: dict[str, Any]) -> dict[str, Any]:
    """An HCL ``policy`` body as Nomad stores it: labelled blocks become lists of
    ``{label: [body]}`` (nomad-autoscaler's ``full-scaling.json.golden``)."""
    out: dict[str, Any] = {}
    for name, value in body.items():
        if name == "__is_block__":
            continue
        if isinstance(value, list) and value and isinstance(value[0], dict):
            out[name] = [{label: [_policy_map(b)]} for label, b in _labelled(value)]
        else:
            out[name] = value
    return out


def _task_map(name: str, body: dict[str, Any]) -> dict[str, Any]:
    if name == "resources":
        return normalise(body, "resources")
    return body  # docker config and env keep their own keys


def _network(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"Mode": body["mode"]}
    ports = _labelled(_blocks(body.get("port", [])))
    def port(lb: str, p: dict[str, Any]) -> dict[str, Any]:
        keys = {"static": "Value", "to": "To", "host_network": "HostNetwork"}
        return {"Label": lb, **{api: p[k] for k, api in keys.items() if k in p}}

    dynamic = [port(lb, p) for lb, p in ports if "static" not in p]
    reserved = [port(lb, p) for lb, p in ports if "static" in p]
    if dynamic:
        out["DynamicPorts"] = dynamic
    if reserved:
        out["ReservedPorts"] = reserved
    return out


def hcl_as_api(text: str) -> dict[str, Any]:
    doc = hcl2.loads(text, serialization_options=OPTS)
    (job_id, body), = _labelled(_blocks(doc["job"]))
    return {"ID": job_id, "Name": job_id, **normalise(body, "job")}


def _heredoc_newlines(api: Any) -> Any:
    """python-hcl2 drops a heredoc's final newline (HCL keeps it): do the same to JSON."""
    if isinstance(api, dict):
        return {k: _heredoc_newlines(v) for k, v in api.items()}
    if isinstance(api, list):
        return [_heredoc_newlines(v) for v in api]
    if isinstance(api, str) and api.endswith("\n"):
        return api[:-1]
    return api


def _sorted_keys(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _sorted_keys(d[k]) for k in sorted(d)}
    if isinstance(d, list):
        return [_sorted_keys(v) for v in d]
    return d


EXAMPLE = load_spec("examples/platform.yaml")
TP2 = parse_spec({"models": [{"name": "big", "engine": {"model": "m", "tensor_parallel_size": 2},
                              "replicas": {"min": 0, "max": 5}}],
                  "nomad": {"gpus_per_node": 4, "canary": 1, "region": "eu",
                            "namespace": "llm"}})
# Envoy -> replicas mTLS: the Triton jobs get TLS flags, certificate templates, a TLS check.
MTLS = parse_spec({"models": [{"name": "a", "engine": {"model": "m"}}],
                   "security": {"upstream_tls": {"ca_file": "/etc/ca.pem", "cert_file": "/etc/c.pem",
                                                 "key_file": "/etc/c.key"}}})
SPECS = [EXAMPLE, TP2, MTLS]
SPEC_IDS = ["example", "tp2", "mtls"]
JOBS = [(spec, job) for spec in SPECS for job in nomad.serving_jobs(spec)]
JOB_IDS = [f"{SPEC_IDS[SPECS.index(spec)]}:{job.id}" for spec, job in JOBS]


@pytest.mark.parametrize(("spec", "job"), JOBS, ids=JOB_IDS)
def test_hcl_parses_and_means_the_same_as_api_json(spec: PlatformSpec, job: Job) -> None:
    from caravan.nomad.job_hcl import job_hcl

    assert _sorted_keys(hcl_as_api(job_hcl(job))) == _sorted_keys(_heredoc_newlines(job_json(job)))


@pytest.mark.parametrize(("spec", "job"), JOBS, ids=JOB_IDS)
def test_every_referenced_port_label_exists(spec: PlatformSpec, job: Job) -> None:
    for g in job.groups:
        labels = set(g.network.labels if g.network else ())
        used = {s.port for s in g.services}
        used |= {c.port for s in g.services for c in s.checks if c.port is not None}
        used |= {p for t in g.tasks for p in t.config.ports}
        used |= {m.group(1) for t in g.tasks for a in t.config.args
                 for m in re.finditer(r"\$\{NOMAD_(?:HOST_)?PORT_(\w+)\}", a)}
        used |= {m.group(1) for s in g.services for _, v in s.meta
                 for m in re.finditer(r"\$\{NOMAD_HOST_PORT_(\w+)\}", v)}
        assert used, f"{job.id}/{g.name} references no port"
        assert used <= labels, f"{job.id}/{g.name}: unknown port labels {used - labels}"
        mounts = {m.volume for t in g.tasks for m in t.volume_mounts}
        assert mounts <= {v.name for v in g.volumes}


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_model_jobs_follow_the_spec(spec: PlatformSpec) -> None:
    for model in spec.models:
        job = next(j for j in nomad.serving_jobs(spec) if j.id == f"triton-{model.name}")
        (group,) = job.groups
        assert group.name == "triton"
        assert group.scaling is not None
        assert group.scaling.min <= group.count <= group.scaling.max
        assert (group.scaling.min, group.count, group.scaling.max) == (
            model.replicas.min, model.replicas.start, model.replicas.max)
        (task,) = group.tasks
        gpus = [d for d in task.resources.devices if d.name == "nvidia/gpu"]
        assert [d.count for d in gpus] == [model.engine.tensor_parallel_size]
        (service,) = group.services
        assert service.name == spec.consul.service_prefix + model.name
        assert dict(service.meta)["model"] == model.name
        mutual = model.upstream_tls is not None and model.upstream_tls.cert_file is not None
        assert [c.type for c in service.checks] == ["tcp" if mutual else "grpc", "script"]
        assert {c.task for c in service.checks if c.type == "script"} == {task.name}
        assert task.config.image == spec.nomad.triton_image
        assert f"--grpc-port={8001}" in task.config.args
        assert job.namespace == spec.nomad.namespace and job.region == spec.nomad.region


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_service_names_and_job_ids_are_unique(spec: PlatformSpec) -> None:
    jobs = nomad.serving_jobs(spec)
    names = [s.name for j in jobs for g in j.groups for s in g.services]
    assert len(names) == len(set(names)), names
    assert len({j.id for j in jobs}) == len(jobs)


def test_canary_is_auto_promoted_so_scaling_is_not_blocked() -> None:
    (group,) = next(j for j in nomad.serving_jobs(TP2) if j.id == "triton-big").groups
    assert group.update is not None and group.update.canary == 1 and group.update.auto_promote


def test_rendering_is_deterministic() -> None:
    assert nomad.render(EXAMPLE) == nomad.render(load_spec("examples/platform.yaml"))
    assert nomad.render_json(EXAMPLE) == nomad.render_json(EXAMPLE)


def test_no_token_reaches_rendered_jobs(tmp_path: Any) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    spec = parse_spec({"models": [{"name": "a", "engine": {"model": "m"}}],
                       "nomad": {"token_file": str(token_file)},
                       "consul": {"token_file": str(token_file)}})
    text = "".join([*nomad.render(spec).values(), *nomad.render_json(spec).values()])
    assert "s3cret-token" not in text and str(token_file) not in text
    assert 'nomadVarList "nomad/jobs/caravan-control-plane"' in text
