"""Checks spanning several fields of the platform spec, on raw (parsed YAML) data.

They run on raw data so they are reported alongside every field error (``parse_spec``
adds them when pydantic refuses the document) and on the validated spec's dump
(``PlatformSpec`` runs them last). A value the document leaves out takes the model's
default, read from ``model_fields``, never restated here. Pure.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from caravan.spec import names
from caravan.spec.models import EngineArgs, ReplicaBounds
from caravan.spec.sections import ConsulSpec, ControlPlaneSpec, EnvoySpec, NomadSpec

NOMAD_SERVICE_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
PROGRESS_MARGIN_S = 600  # model groups: progress_deadline = startup_grace_s + 600
PORTS: tuple[tuple[str, type[BaseModel], str], ...] = (
    ("envoy", EnvoySpec, "listen_port"), ("envoy", EnvoySpec, "admin_port"),
    ("control_plane", ControlPlaneSpec, "xds_port"), ("control_plane", ControlPlaneSpec, "admin_port"),
)


def value(section: Any, model: type[BaseModel], field: str) -> Any:
    """``section[field]`` of raw data, or the field's default on ``model`` when the
    section or the field is missing (or null, as a dump writes a field left out)."""
    given = section.get(field) if isinstance(section, dict) else None
    return model.model_fields[field].default if given is None else given


def cross_field_errors(data: dict[str, Any]) -> list[str]:
    """Checks spanning several fields: duplicate names, unknown default model, port
    clashes, GPU fit, what Nomad refuses, autoscaling bounds and check names."""
    errors: list[str] = []
    seen: dict[str, int] = {}
    for i, m in enumerate(_models(data)):
        name = m.get("name")
        if not isinstance(name, str):
            continue
        if name in seen:
            errors.append(f"models[{i}].name: duplicate model name {name!r} (also models[{seen[name]}])")
        seen.setdefault(name, i)
    default = data.get("default_model")
    if isinstance(default, str) and seen and default not in seen:  # non-strings: a field error
        errors.append(f"default_model: {default!r} is not one of the models {sorted(seen)}")
    autoscaling = [e for i, m in enumerate(_models(data)) for e in autoscaling_errors(i, m)]
    return errors + _port_clashes(data) + _gpu_fit(data) + _nomad_rules(data) + autoscaling


def _models(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The raw models that are mappings (others are field errors), keeping their index."""
    models = data.get("models")
    return [m if isinstance(m, dict) else {} for m in models] if isinstance(models, list) else []


def _nomad_rules(data: dict[str, Any]) -> list[str]:
    """What Nomad's job validation would refuse in the rendered jobs: a ``kill_timeout``
    longer than the model groups' ``progress_deadline`` (``Task.Validate``), and Consul
    service names (``consul.service_prefix`` + model name) that are not RFC 1123 labels of
    at most 63 characters (``Service.ValidateName``)."""
    nomad = data.get("nomad")
    kill = value(nomad, NomadSpec, "kill_timeout_s")
    grace = value(nomad, NomadSpec, "startup_grace_s")
    errors: list[str] = []
    if isinstance(kill, int) and isinstance(grace, int) and kill > grace + PROGRESS_MARGIN_S:
        errors.append(f"nomad.kill_timeout_s: {kill} s is longer than the model groups' "
                      f"progress_deadline (startup_grace_s + {PROGRESS_MARGIN_S} = "
                      f"{grace + PROGRESS_MARGIN_S} s); Nomad refuses a kill_timeout longer than "
                      "the progress deadline")
    prefix = value(data.get("consul"), ConsulSpec, "service_prefix")
    if not isinstance(prefix, str):
        return errors
    if re.search(r"[^A-Za-z0-9-]", prefix) or prefix.startswith("-"):
        errors.append(f"consul.service_prefix: {prefix!r} may hold only letters, digits and '-', "
                      "not first: Nomad service names are RFC 1123 labels")
        return errors
    for i, m in enumerate(_models(data)):
        name = m.get("name")
        service = names.consul_service(prefix, name) if isinstance(name, str) else None
        if service is not None and not NOMAD_SERVICE_NAME_RE.match(service):
            errors.append(f"models[{i}].name: service name {service!r} (consul.service_prefix "
                          f"+ name) has {len(service)} characters; Nomad allows at most 63 "
                          "(RFC 1123): shorten the name or the prefix")
    return errors


def _gpu_fit(data: dict[str, Any]) -> list[str]:
    """A replica must fit on one node: tensor_parallel_size <= GPUs asked <= gpus_per_node."""
    per_node = value(data.get("nomad"), NomadSpec, "gpus_per_node")
    if not isinstance(per_node, int):
        return []
    errors: list[str] = []
    for i, m in enumerate(_models(data)):
        tp = value(m.get("engine"), EngineArgs, "tensor_parallel_size")
        res = m.get("resources")
        gpus = res.get("gpus") if isinstance(res, dict) else None
        if not isinstance(tp, int):
            continue
        if tp > per_node:
            errors.append(f"models[{i}].engine.tensor_parallel_size: {tp} GPUs needed on one "
                          f"node, but nomad.gpus_per_node is {per_node}")
        if isinstance(gpus, int) and gpus < tp:
            errors.append(f"models[{i}].resources.gpus: {gpus} is less than "
                          f"engine.tensor_parallel_size ({tp})")
        elif isinstance(gpus, int) and gpus > per_node:
            errors.append(f"models[{i}].resources.gpus: {gpus} is more than "
                          f"nomad.gpus_per_node ({per_node})")
    return errors


def _port_clashes(data: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    by_port: dict[Any, str] = {}
    for section, model, field in PORTS:
        port = value(data.get(section), model, field)
        name = f"{section}.{field}"
        if not isinstance(port, int):  # reported as a field error
            continue
        if port in by_port:
            errors.append(f"{name}: port {port} is already used by {by_port[port]}")
        by_port.setdefault(port, name)
    return errors


def autoscaling_errors(i: int, model: dict[str, Any]) -> list[str]:
    """Across fields of raw ``models[i].autoscaling``: the resolved ``min <= max`` (both
    default to the model's ``replicas``) and unique check names."""
    section = model.get("autoscaling")
    if not isinstance(section, dict):
        return []
    where = f"models[{i}].autoscaling"
    lo, hi = (section[k] if section.get(k) is not None
              else value(model.get("replicas"), ReplicaBounds, k) for k in ("min", "max"))
    errors: list[str] = []
    if isinstance(lo, int) and isinstance(hi, int) and hi < lo:
        errors.append(f"{where}.max: must be >= min ({lo}), got {hi}")
    checks = section.get("checks")
    found = [c.get("name") if isinstance(c, dict) else None
             for c in (checks if isinstance(checks, list | tuple) else [])]
    for j, name in enumerate(found):
        if name is not None and name in found[:j]:
            errors.append(f"{where}.checks[{j}].name: duplicate check name {name!r}")
    return errors
