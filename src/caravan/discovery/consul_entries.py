"""Pure parsing of Consul ``/v1/health/service/:name`` entries into ``Replica``s.

No I/O. ``parse_entries`` never raises on bad data: every entry either becomes a
``Replica``, is *excluded* (its health says it must not get traffic), or is
*skipped* as malformed with a short, bounded-cardinality reason (used as a
Prometheus label).

Health mapping (documented contract):

- a maintenance check (``_service_maintenance:<id>`` or ``_node_maintenance``,
  always critical in Consul) -> ``DRAINING``: Envoy sends no new requests but
  in-flight ones finish;
- tag ``draining`` on an otherwise eligible entry -> ``DRAINING``;
- all checks passing -> ``HEALTHY`` with weight ``Weights.Passing``;
- worst check warning -> ``HEALTHY`` with weight ``Weights.Warning`` when
  ``allow_warning``, else excluded;
- any other critical (or unknown) check -> excluded, not sent as UNHEALTHY:
  keeping dead hosts in a cluster would push Envoy into panic routing
  (all hosts, healthy or not) once fewer than half are healthy.

Identity: Consul keys an instance by (node, service id). The replica id is
``Service.ID``, or ``<Service.ID>@<Node.Node>`` when the same service id is registered
on several nodes; the same (node, id) twice in one answer is a ``duplicate_id``.

``Weights.Warning`` 0 is valid in Consul (``ValidateWeights``: Passing >= 1, Warning
>= 0) and means "no traffic while warning": such an instance is excluded while its
worst check is warning, not counted as malformed.

Field mapping: address = ``Service.Address`` or,
when empty, ``Node.Address`` (must be an IP literal: Envoy rejects hostnames in
EDS); port = ``Service.Port`` (1-65535); weight = ``Meta.weight`` if set, else
the ``Weights`` entry for the status (1-65535); zone = ``Meta.zone`` or
``Node.Datacenter``; metrics port = ``Meta.metrics_port``; ``Meta.model``, when
present, must equal the watched model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from caravan.discovery.types import HealthStatus, Replica

DRAINING_TAG = "draining"
SERVICE_MAINT_PREFIX = "_service_maintenance:"
NODE_MAINT_ID = "_node_maintenance"
MAX_WEIGHT = 65535

# Every reason an entry can be skipped (Prometheus label values; keep bounded).
SKIP_REASONS = (
    "not_an_object", "missing_id", "wrong_service", "model_mismatch", "bad_port",
    "bad_address", "bad_weight", "bad_metrics_port", "bad_tags", "bad_meta",
    "bad_checks", "duplicate_id",
)

_STATUS_RANK = {"passing": 0, "warning": 1, "critical": 2}


class _Skip(Exception):
    """Internal: an entry is malformed for ``reason``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Skipped:
    """One malformed entry: its service id (or ``#<content hash>`` when it has none),
    a reason from ``SKIP_REASONS`` and a human-readable detail."""

    service_id: str
    reason: str
    detail: str


@dataclass(frozen=True)
class ParseResult:
    """Replicas to publish (sorted by id), malformed entries, and how many
    well-formed entries were excluded for their health."""

    replicas: tuple[Replica, ...]
    skipped: tuple[Skipped, ...]
    excluded: int


def parse_entries(
    entries: Any, model: str, service: str, allow_warning: bool = False
) -> ParseResult:
    """Parse a health-endpoint response body (a JSON list) for ``model``, whose
    Consul service is ``service``. A non-list body yields one skip."""
    if not isinstance(entries, list):
        return ParseResult((), (Skipped("#body", "not_an_object", "body is not a JSON list"),), 0)
    replicas: dict[tuple[str, str], Replica] = {}  # (node, service id) -> replica
    skipped: list[Skipped] = []
    excluded = 0
    for entry in entries:
        sid = _service_key(entry)
        try:
            replica = parse_entry(entry, model, service, allow_warning)
        except _Skip as s:
            skipped.append(Skipped(sid, s.reason, s.detail))
            continue
        if replica is None:
            excluded += 1
            continue
        key = (_node_name(entry), replica.id)
        if key in replicas:
            skipped.append(Skipped(sid, "duplicate_id",
                                   f"service id {sid!r} appears twice on node {key[0]!r}"))
        else:
            replicas[key] = replica
    ordered = tuple(sorted(_unique_ids(replicas), key=lambda r: r.id))
    return ParseResult(ordered, tuple(skipped), excluded)


def _node_name(entry: Any) -> str:
    node = entry.get("Node") if isinstance(entry, dict) else None
    name = node.get("Node") if isinstance(node, dict) else None
    return name if isinstance(name, str) else ""


def _unique_ids(replicas: Mapping[tuple[str, str], Replica]) -> list[Replica]:
    """Consul keys an instance by (node, service id): a service id registered on several
    nodes names each instance ``<service id>@<node>``; a unique one stays as it is."""
    nodes_per_id: dict[str, int] = {}
    for _, sid in replicas:
        nodes_per_id[sid] = nodes_per_id.get(sid, 0) + 1
    return [r if nodes_per_id[sid] == 1 else dataclasses.replace(r, id=f"{sid}@{node}")
            for (node, sid), r in replicas.items()]


def parse_entry(entry: Any, model: str, service: str, allow_warning: bool) -> Replica | None:
    """One entry -> a ``Replica``, or None when its health excludes it.
    Raises ``_Skip`` (internal) when malformed."""
    if not isinstance(entry, dict):
        raise _Skip("not_an_object", f"entry is a {type(entry).__name__}, expected an object")
    node = _obj(entry.get("Node"), "Node")
    svc = _obj(entry.get("Service"), "Service")
    sid = svc.get("ID")
    if not isinstance(sid, str) or not sid:
        raise _Skip("missing_id", "Service.ID: missing or not a non-empty string")
    if svc.get("Service") != service:
        got = svc.get("Service")
        raise _Skip("wrong_service", f"Service.Service: expected {service!r}, got {got!r}")
    tags = _tags(svc.get("Tags"))
    meta = _meta(svc.get("Meta"))
    if meta.get("model", model) != model:
        raise _Skip("model_mismatch", f"Meta.model: expected {model!r}, got {meta['model']!r}")
    health = _health(entry.get("Checks"), tags, allow_warning)
    if health is None:
        return None
    status, draining = health
    if status == "warning" and "weight" not in meta and _warning_weight(svc) == 0:
        return None  # Weights.Warning = 0: valid in Consul, meaning no traffic while warning
    return Replica(
        id=sid, model=model, address=_address(svc, node), port=_port(svc.get("Port")),
        weight=_weight(svc, meta, status), zone=_zone(meta, node),
        health=HealthStatus.DRAINING if draining else HealthStatus.HEALTHY,
        metrics_port=_metrics_port(meta),
    )


def _service_key(entry: Any) -> str:
    """The entry's service id or, lacking one, ``#`` + a short hash of its content
    (stable across responses, unlike its position)."""
    if isinstance(entry, dict):
        svc = entry.get("Service")
        if isinstance(svc, dict) and isinstance(svc.get("ID"), str) and svc["ID"]:
            return str(svc["ID"])
    text = json.dumps(entry, sort_keys=True, default=repr)
    return "#" + hashlib.sha256(text.encode()).hexdigest()[:12]


def _obj(value: Any, name: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Skip("not_an_object", f"{name}: expected an object, got {type(value).__name__}")
    return value


def _tags(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise _Skip("bad_tags", f"Service.Tags: expected a list of strings, got {value!r}")
    return tuple(value)


def _meta(value: Any) -> Mapping[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _Skip("bad_meta", f"Service.Meta: expected an object of strings, got {value!r}")
    return value


def _health(checks: Any, tags: Sequence[str], allow_warning: bool) -> tuple[str, bool] | None:
    """(aggregate status, draining) or None when the entry must get no traffic."""
    if checks is None:
        checks = []
    if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
        raise _Skip("bad_checks", "Checks: expected a list of objects")
    maintenance = any(_is_maintenance(c.get("CheckID")) for c in checks)
    others = [c for c in checks if not _is_maintenance(c.get("CheckID"))]
    worst = max((_STATUS_RANK.get(str(c.get("Status")), 2) for c in others), default=0)
    if worst == 2 or (worst == 1 and not allow_warning):
        return ("passing", True) if maintenance and worst < 2 else None
    status = "warning" if worst == 1 else "passing"
    return status, maintenance or DRAINING_TAG in tags


def _is_maintenance(check_id: Any) -> bool:
    return isinstance(check_id, str) and (
        check_id.startswith(SERVICE_MAINT_PREFIX) or check_id == NODE_MAINT_ID
    )


def _address(svc: Mapping[str, Any], node: Mapping[str, Any]) -> str:
    raw = svc.get("Address") or node.get("Address")
    if not isinstance(raw, str) or not raw:
        raise _Skip("bad_address", "Service.Address and Node.Address: both empty")
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise _Skip("bad_address", f"address {raw!r}: expected an IPv4 or IPv6 literal") from None


def _int_in(value: Any, lo: int, hi: int) -> int | None:
    """``value`` as an int in [lo, hi] (ints or decimal strings), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and lo <= value <= hi:
        return value
    return None


def _port(value: Any) -> int:
    port = _int_in(value, 1, 65535) if isinstance(value, int) else None
    if port is None:
        raise _Skip("bad_port", f"Service.Port: expected 1-65535, got {value!r}")
    return port


def _weight(svc: Mapping[str, Any], meta: Mapping[str, str], status: str) -> int:
    if "weight" in meta:
        w = _int_in(meta["weight"], 1, MAX_WEIGHT)
        if w is None:
            raise _Skip("bad_weight",
                        f"Meta.weight: expected 1-{MAX_WEIGHT}, got {meta['weight']!r}")
        return w
    weights = svc.get("Weights")
    if weights is None:
        return 1
    key = "Warning" if status == "warning" else "Passing"
    w = _int_in(weights.get(key, 1) if isinstance(weights, dict) else None, 1, MAX_WEIGHT)
    if w is None:
        raise _Skip("bad_weight",
                    f"Service.Weights.{key}: expected 1-{MAX_WEIGHT}, got {weights!r}")
    return w


def _warning_weight(svc: Mapping[str, Any]) -> Any:
    weights = svc.get("Weights")
    return weights.get("Warning") if isinstance(weights, dict) else None


def _zone(meta: Mapping[str, str], node: Mapping[str, Any]) -> str:
    zone = meta.get("zone") or node.get("Datacenter") or ""
    return zone if isinstance(zone, str) else ""


def _metrics_port(meta: Mapping[str, str]) -> int | None:
    if "metrics_port" not in meta:
        return None
    port = _int_in(meta["metrics_port"], 1, 65535)
    if port is None:
        raise _Skip("bad_metrics_port",
                    f"Meta.metrics_port: expected 1-65535, got {meta['metrics_port']!r}")
    return port
