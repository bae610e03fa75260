"""A job plan's diff, as ``Job.Plan`` returns it (test code only).

* ``job_diff`` - ``Job.Diff(other, contextual=true)`` (``nomad/structs/diff.go``, as
  ``Job.Plan`` calls it): task groups nest ``Fields``/``Objects``/``Tasks``; tasks nest
  their own ``Fields`` (primitive fields, ``Env[k]``/``Meta[k]`` maps) and ``Objects``
  (``Config`` flattened like ``helper/flatmap``, ``Resources``, ``Template``, ...);
  ``annotate`` adds ``scheduler/annotate.go``'s ``Updates`` and annotations.

Pinned against hashicorp/nomad at aa026cc (2026-08). Pure, on the API JSON (PascalCase dicts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from tests.fakes.nomad.api import Json
from tests.fakes.nomad.go_format import go_typed, go_value
from tests.fakes.nomad.jobspec import JOB_BOOKKEEPING

MAP_FIELDS = ("Meta", "Env")
ORDER = {"Edited": 0, "Added": 1, "Deleted": 2, "None": 3}


def _flat_primitive(obj: Json | None, skip: Iterable[str] = ()) -> dict[str, str]:
    """``flatmap.Flatten(obj, filter, primitiveOnly=true)``: scalars and maps of scalars."""
    out: dict[str, str] = {}
    for key, value in (obj or {}).items():
        if key in skip:
            continue
        if key in MAP_FIELDS and isinstance(value, dict):
            out.update({f"{key}[{k}]": go_typed(v) for k, v in value.items()})
        elif not isinstance(value, dict | list):
            out[key] = go_typed(value)
    return out


def _flat_all(value: Any, prefix: str = "") -> dict[str, str]:
    """``flatmap.Flatten(obj, nil, false)`` of a ``map[string]interface{}`` (Config, Policy)."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_flat_all(v, f"{prefix}[{k}]" if prefix else str(k)))
        return out
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(_flat_all(v, f"{prefix}[{i}]"))
        return out
    return {prefix: go_value(value)}


def _field(kind: str, name: str, old: str, new: str) -> Json:
    return {"Type": kind, "Name": name, "Old": old, "New": new, "Annotations": None}


def field_diffs(old: dict[str, str] | None, new: dict[str, str] | None,
                contextual: bool) -> list[Json]:
    """``fieldDiffs``: one FieldDiff per changed key (every key when ``contextual``)."""
    a, b = old or {}, new or {}
    out = []
    for name in set(a) | set(b):
        o, n = a.get(name, ""), b.get(name, "")
        if o == n:
            if contextual:
                out.append(_field("None", name, o, n))
            continue
        kind = "Added" if o == "" else "Deleted" if n == "" else "Edited"
        out.append(_field(kind, name, o, n))
    return sorted(out, key=lambda f: (f["Name"], f["Old"], f["New"]))


def _object(name: str, old: Any, new: Any, flat: Callable[[Any], dict[str, str]],
            objects: list[Json] | None = None) -> Json | None:
    """``primitiveObjectDiff`` (contextual): None when nothing changed."""
    if old == new and not objects:
        return None
    fields = field_diffs(flat(old) if old is not None else None,
                         flat(new) if new is not None else None, contextual=True)
    kinds = {f["Type"] for f in fields} | {o["Type"] for o in objects or []}
    if old is None:
        kind = "Added"
    elif new is None:
        kind = "Deleted"
    elif kinds - {"None"}:
        kind = "Edited"
    else:
        return None
    return {"Type": kind, "Name": name, "Fields": fields, "Objects": objects or None}


def _sorted_objects(objs: Iterable[Json | None]) -> list[Json] | None:
    real = [o for o in objs if o is not None]
    return sorted(real, key=lambda o: (o["Name"], ORDER[o["Type"]])) or None


def _list_objects(name: str, old: list[Json] | None, new: list[Json] | None,
                  key: Callable[[Json], Any], diff: Callable[[str, Any, Any], Json | None],
                  ) -> list[Json | None]:
    a = {key(x): x for x in old or []}
    b = {key(x): x for x in new or []}
    return [diff(name, a.get(k), b.get(k)) for k in list(a) + [k for k in b if k not in a]]


def _plain(name: str, old: Any, new: Any) -> Json | None:
    return _object(name, old, new, _flat_primitive)


def _check(name: str, old: Json | None, new: Json | None) -> Json | None:
    sub = _plain("CheckRestart", (old or {}).get("CheckRestart"), (new or {}).get("CheckRestart"))
    return _object(name, old, new, _flat_primitive, [sub] if sub else None)


def _service(name: str, old: Json | None, new: Json | None) -> Json | None:
    checks = _list_objects("Check", (old or {}).get("Checks"), (new or {}).get("Checks"),
                           lambda c: c.get("Name"), _check)
    tags = _string_set("Tags", (old or {}).get("Tags"), (new or {}).get("Tags"))
    return _object(name, old, new, _flat_primitive, _sorted_objects([*checks, tags]))


def _string_set(name: str, old: list[str] | None, new: list[str] | None) -> Json | None:
    a, b = set(old or []), set(new or [])
    if a == b:
        return None
    fields = [_field("Deleted", name, v, "") for v in sorted(a - b)]
    fields += [_field("Added", name, "", v) for v in sorted(b - a)]
    kind = "Edited" if a - b and b - a else "Added" if b - a else "Deleted"
    return {"Type": kind, "Name": name, "Fields": fields, "Objects": None}


def _network(name: str, old: Json | None, new: Json | None) -> Json | None:
    ports = []
    for label, key in (("Dynamic Port", "DynamicPorts"), ("Static Port", "ReservedPorts")):
        ports += _list_objects(label, (old or {}).get(key), (new or {}).get(key),
                               lambda p: p.get("Label"), _plain)
    return _object(name, old, new, _flat_primitive, _sorted_objects(ports))


def _scaling(name: str, old: Json | None, new: Json | None) -> Json | None:
    skip = ("CreateIndex", "ModifyIndex", "ID", "Type", "Target")
    policy = _object("Policy", (old or {}).get("Policy"), (new or {}).get("Policy"), _flat_all)
    return _object(name, old, new, lambda s: _flat_primitive(s, skip),
                   [policy] if policy else None)


def _resources(name: str, old: Json | None, new: Json | None) -> Json | None:
    devices = _list_objects("Device", (old or {}).get("Devices"), (new or {}).get("Devices"),
                            lambda d: d.get("Name"), _plain)
    return _object(name, old, new, _flat_primitive, _sorted_objects(devices))


def task_diff(old: Json | None, new: Json | None) -> Json:
    """``Task.Diff`` (contextual objects)."""
    a, b = old or {}, new or {}
    kind = "Added" if old is None else "Deleted" if new is None else (
        "Edited" if old != new else "None")
    fields = field_diffs(_flat_primitive(old, ("Name", "Config")) if old else None,
                         _flat_primitive(new, ("Name", "Config")) if new else None, False)
    objs = [_object("Config", a.get("Config"), b.get("Config"), _flat_all),
            _resources("Resources", a.get("Resources"), b.get("Resources")),
            _plain("LogConfig", a.get("LogConfig"), b.get("LogConfig"))]
    objs += _list_objects("Template", a.get("Templates"), b.get("Templates"),
                          lambda t: t.get("DestPath"), _plain)
    objs += _list_objects("VolumeMount", a.get("VolumeMounts"), b.get("VolumeMounts"),
                          lambda m: (m.get("Volume"), m.get("Destination")), _plain)
    return {"Type": kind, "Name": (new or old or {}).get("Name"), "Fields": fields,
            "Objects": _sorted_objects(objs), "Annotations": None}


def group_diff(old: Json | None, new: Json | None) -> Json:
    """``TaskGroup.Diff``: group fields, group objects, then every task (None ones too)."""
    a, b = old or {}, new or {}
    kind = "Added" if old is None else "Deleted" if new is None else (
        "Edited" if old != new else "None")
    fields = field_diffs(_flat_primitive(old, ("Name",)) if old else None,
                         _flat_primitive(new, ("Name",)) if new else None, False)
    objs = [_plain(n, a.get(n), b.get(n)) for n in
            ("RestartPolicy", "Migrate", "ReschedulePolicy", "EphemeralDisk")]
    update_skip = ("Stagger",)
    objs.append(_object("Update", a.get("Update"), b.get("Update"),
                        lambda u: _flat_primitive(u, update_skip)))
    objs += _list_objects("Network", a.get("Networks"), b.get("Networks"),
                          lambda n: n.get("Mode"), _network)
    objs.append(_scaling("Scaling", a.get("Scaling"), b.get("Scaling")))
    objs += _list_objects("Service", a.get("Services"), b.get("Services"),
                          lambda s: (s.get("Name"), s.get("PortLabel")), _service)
    objs += _list_objects("Volume", list((a.get("Volumes") or {}).values()),
                          list((b.get("Volumes") or {}).values()), lambda v: v.get("Name"),
                          _plain)
    tasks = {t.get("Name"): t for t in a.get("Tasks") or []}
    new_tasks = {t.get("Name"): t for t in b.get("Tasks") or []}
    tdiffs = [task_diff(tasks.get(n), new_tasks.get(n)) for n in sorted(set(tasks) | set(new_tasks))]
    return {"Type": kind, "Name": (new or old or {}).get("Name"), "Fields": fields,
            "Objects": _sorted_objects(objs), "Tasks": tdiffs, "Updates": None}


def job_diff(old: Json | None, new: Json) -> Json:
    """``Job.Diff(new, contextual=true)`` of two canonicalized jobs."""
    skip = (*JOB_BOOKKEEPING, "ID", "Update")
    fields = field_diffs(_flat_primitive(old, skip) if old else None,
                         _flat_primitive(new, skip), False)
    dcs = _string_set("Datacenters", (old or {}).get("Datacenters"), new.get("Datacenters"))
    groups_a = {g.get("Name"): g for g in (old or {}).get("TaskGroups") or []}
    groups_b = {g.get("Name"): g for g in new.get("TaskGroups") or []}
    tgs = [group_diff(groups_a.get(n), groups_b.get(n)) for n in sorted(set(groups_a) | set(groups_b))]
    kind = "Added" if old is None else "None"
    if kind == "None" and (any(f["Type"] != "None" for f in fields) or dcs
                           or any(g["Type"] != "None" for g in tgs)):
        kind = "Edited"
    return {"Type": kind, "ID": new.get("ID"), "Fields": fields,
            "Objects": [dcs] if dcs else None, "TaskGroups": tgs}


UPDATE_NAMES = (("Ignore", "ignore"), ("Place", "create"), ("Migrate", "migrate"),
                ("Stop", "destroy"), ("Canary", "canary"), ("InPlaceUpdate", "in-place update"),
                ("DestructiveUpdate", "create/destroy update"))


def annotate(diff: Json, desired: dict[str, Json]) -> None:
    """``scheduler/annotate.go`` ``Annotate``: group ``Updates``, Count and task annotations."""
    for tg in diff.get("TaskGroups") or []:
        counts = desired.get(tg["Name"]) or {}
        updates = {label: counts[key] for key, label in UPDATE_NAMES if counts.get(key)}
        tg["Updates"] = updates or None
        for f in tg["Fields"]:
            if f["Name"] == "Count":
                old, new = int(f["Old"] or 0), int(f["New"] or 0)
                if old != new:
                    f["Annotations"] = ["forces create" if old < new else "forces destroy"]
        for task in tg["Tasks"]:
            _annotate_task(task, tg)


def _annotate_task(task: Json, parent: Json) -> None:
    if task["Type"] == "None":
        return
    if parent["Type"] in ("Added", "Deleted") and task["Type"] in ("Added", "Deleted"):
        task["Annotations"] = ["forces create" if task["Type"] == "Added" else "forces destroy"]
        return
    destructive = any(f["Name"] != "KillTimeout" for f in task["Fields"]) or any(
        o["Name"] not in ("Service", "Constraint", "Affinity", "Spread", "LogConfig")
        for o in task["Objects"] or [])
    task["Annotations"] = ["forces create/destroy update" if destructive
                           else "forces in-place update"]
