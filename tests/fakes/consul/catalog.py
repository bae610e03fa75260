"""The fake Consul's catalog: nodes, service instances, checks and their raft indexes.

Indexes (``agent/consul/state/catalog.go``)
    Every write takes the next raft index. A check change bumps its service's index; a node
    check change bumps every service on that node (``updateAllServiceIndexesOfNode``). A
    service that does not exist answers the last extinction index (set when the last instance
    of any service is deregistered) or, if none ever was, the catalog's max index
    (``maxIndexAndWatchChForService``); registering it wakes a query blocked on it. The
    checks, services and nodes tables each have an index entry and a content version:
    a write to a table moves both (check writes: checks; instance writes: services, plus
    the nodes and checks index entries without a write, as ``catalogInsertService`` and
    ``deleteServiceTxn`` do; ``set_node_address``: nodes, and every service on the node),
    and only a content change wakes a blocked datacenter-wide read (its memdb watch set).
    ``reset_index`` makes every index go backwards (a raft snapshot restore).

Response shape (``agent/structs/structs.go``)
    ``NodeService.Port`` is ``json:",omitempty"``: a service registered without a port has no
    ``Port`` key. Tags and Checks are ``[]`` rather than null (``healthServiceNodes``).
"""

from __future__ import annotations

import threading
from typing import Any

from tests.fakes.consul.errors import HttpError

STATUSES = ("passing", "warning", "critical")
NODE_MAINT_ID = "_node_maintenance"
TABLES = ("checks", "services", "nodes")


class Catalog:
    """The state store of one datacenter. Thread-safe: every method takes ``_cond``, which
    is notified on every write (blocked reads wait on it)."""

    def __init__(self, datacenter: str, default_node: str) -> None:
        self.datacenter = datacenter
        self.default_node = default_node
        self._cond = threading.Condition()
        self._index = 10
        self._nodes: dict[str, dict[str, Any]] = {}
        self._services: dict[tuple[str, str], dict[str, Any]] = {}  # (node, id) -> service
        self._checks: dict[tuple[str, str], dict[str, Any]] = {}  # (node, check id) -> check
        self._svc_index: dict[str, int] = {}  # service name -> modify index
        self._extinction = 0  # raft index of the last service extinction (0: never)
        # per table: the index entry (``indexUpdateMaxTxn``) and a content version (bumped
        # when the table itself is written: what a blocked query's memdb watch fires on)
        self._table_index = dict.fromkeys(TABLES, 10)
        self._table_version = dict.fromkeys(TABLES, 0)
        self._abandon = 0  # bumped by reset_index (a snapshot restore's AbandonCh)
        self._raw: dict[str, list[Any]] = {}

    def add_node(self, node: str, address: str = "127.0.0.1") -> None:
        """A node with its ``serfHealth`` check (passing)."""
        with self._cond:
            if node in self._nodes:
                return
            idx = self._next_index()
            self._write(idx, "nodes", "checks")
            self._nodes[node] = {"ID": "", "Node": node, "Address": address,
                                 "Datacenter": self.datacenter, "TaggedAddresses": {},
                                 "Meta": {}, "CreateIndex": idx, "ModifyIndex": idx}
            self._checks[(node, "serfHealth")] = self._check_doc(
                node, "serfHealth", "Serf Health Status", "passing", None, idx,
                output="Agent alive and reachable")

    def set_node_address(self, node: str, address: str) -> None:
        """Re-register ``node`` with a new address (``ensureNodeTxn``): a nodes-table write;
        every service on the node gets a new index (``catalogInsertNode`` ->
        ``updateAllServiceIndexesOfNode``); neither the services nor the checks table moves."""
        with self._cond:
            idx = self._next_index()
            self._nodes[node].update(Address=address, ModifyIndex=idx)
            self._write(idx, "nodes")
            for (n, _), svc in self._services.items():
                if n == node:
                    self._svc_index[svc["Service"]] = idx

    def register(self, name: str, service_id: str | None = None, *, port: int = 8001,
                 address: str = "", tags: list[str] | None = None,
                 meta: dict[str, str] | None = None,
                 weights: dict[str, int] | None = None, check_status: str | None = "passing",
                 node: str | None = None, node_address: str = "127.0.0.1") -> str:
        """Register a service instance on ``node``; ``check_status`` None registers no check."""
        body: dict[str, Any] = {"Name": name, "ID": service_id or name, "Port": port,
                                "Address": address, "Tags": tags or [], "Meta": meta or {}}
        if weights is not None:
            body["Weights"] = weights
        if check_status is not None:
            body["Check"] = {"TTL": "30s", "Status": check_status}
        node = node or self.default_node
        self.add_node(node, node_address)
        return self.register_json(body, node)

    def register_json(self, raw_body: dict[str, Any], node: str) -> str:
        body = fold(raw_body)  # Consul decodes JSON field names case-insensitively
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise HttpError(400, "Missing service name")
        sid = str(body.get("id") or name)
        weights = _weights(body.get("weights"))
        listed = body.get("checks") or ([body["check"]] if body.get("check") else [])
        with self._cond:
            had_checks = self._drop_service(node, sid)
            idx = self._bump(name)
            self._write(idx, "services", *(["checks"] if listed or had_checks else []))
            self._table_index["nodes"] = idx  # catalogInsertService: index only, no wake
            svc: dict[str, Any] = {
                "ID": sid, "Service": name, "Tags": list(body.get("tags") or []),
                "Address": body.get("address", ""), "Meta": dict(body.get("meta") or {}),
                "Port": int(body.get("port") or 0), "Weights": weights,
                "EnableTagOverride": False, "CreateIndex": idx, "ModifyIndex": idx,
            }
            self._services[(node, sid)] = svc
            for n, chk in enumerate(fold(c) for c in listed):
                default = f"service:{sid}" if len(listed) == 1 else f"service:{sid}:{n + 1}"
                cid = chk.get("checkid") or default
                self._checks[(node, cid)] = self._check_doc(
                    node, cid, chk.get("name") or f"Service '{name}' check",
                    chk.get("status", "critical"), svc, idx)
        return sid

    def deregister(self, service_id: str, node: str | None = None) -> None:
        node = node or self.default_node
        with self._cond:
            svc = self._services.get((node, service_id))
            if svc is None:
                raise HttpError(404, f'Unknown service ID "{service_id}". Ensure that the '
                                     "service ID is passed, not the service name.")
            name = svc["Service"]
            had_checks = self._drop_service(node, service_id)
            idx = self._bump(name)
            self._write(idx, "services", *(["checks"] if had_checks else []))
            self._table_index["nodes"] = idx  # deleteServiceTxn: index only, no wake
            self._table_index["checks"] = idx  # catalogUpdateCheckIndexes, always
            if not any(s["Service"] == name for s in self._services.values()):
                self._svc_index.pop(name, None)  # the service is extinct
                self._extinction = idx

    def set_check(self, service_id: str, status: str, output: str = "",
                  node: str | None = None) -> None:
        """Set every (non-maintenance) check of ``service_id`` on ``node`` to ``status``."""
        node = node or self.default_node
        with self._cond:
            ids = [cid for (n, cid), v in self._checks.items()
                   if n == node and v["ServiceID"] == service_id
                   and not cid.startswith("_service_maintenance:")]
        if not ids:
            raise KeyError(f"service {service_id!r} has no checks")
        for cid in ids:
            self.update_check(cid, status, output, node)

    def update_check(self, check_id: str, status: str, output: str = "",
                     node: str | None = None) -> None:
        if status not in STATUSES:
            raise HttpError(400, f'Invalid check status: "{status}"')
        node = node or self.default_node
        with self._cond:
            check = self._checks.get((node, check_id))
            if check is None:
                raise HttpError(404, f'Unknown check ID "{check_id}"')
            idx = self._bump_for_check(check)
            self._write(idx, "checks")
            check.update(Status=status, Output=output, ModifyIndex=idx)

    def node_check(self, node: str, status: str, check_id: str = "serfHealth") -> None:
        """Set (or add) a node-level check; every service on ``node`` gets a new index."""
        if status not in STATUSES:
            raise ValueError(status)
        self.add_node(node)
        with self._cond:
            check = self._checks.get((node, check_id))
            if check is None:
                check = self._checks[(node, check_id)] = self._check_doc(
                    node, check_id, check_id, status, None, self._index)
            idx = self._bump_for_check(check)
            self._write(idx, "checks")
            check.update(Status=status, ModifyIndex=idx)

    def node_maintenance(self, on: bool, reason: str = "", node: str | None = None) -> None:
        """``PUT /v1/agent/maintenance``: a critical ``_node_maintenance`` check on the node."""
        node = node or self.default_node
        with self._cond:
            key = (node, NODE_MAINT_ID)
            if on:
                notes = reason or ("Maintenance mode is enabled for this node, but no reason "
                                   "was provided. This is a default message.")
                self._checks[key] = self._check_doc(node, NODE_MAINT_ID, "Node Maintenance Mode",
                                                    "critical", None, self._index, notes=notes)
                idx = self._bump_for_check(self._checks[key])
                self._checks[key].update(CreateIndex=idx, ModifyIndex=idx)
                self._write(idx, "checks")
            elif key in self._checks:
                idx = self._bump_for_check(self._checks.pop(key))
                self._write(idx, "checks")
                self._table_index["services"] = idx  # deleteCheckTxn of a node check

    def maintenance(self, service_id: str, on: bool, reason: str = "",
                    node: str | None = None) -> None:
        node = node or self.default_node
        with self._cond:
            svc = self._services.get((node, service_id))
            if svc is None:
                raise HttpError(404, f'Unknown service ID "{service_id}"')
            key = (node, f"_service_maintenance:{service_id}")
            if on:
                notes = reason or ("Maintenance mode is enabled for this service, but no reason "
                                   "was provided. This is a default message.")
                idx = self._bump(svc["Service"])
                self._checks[key] = self._check_doc(node, key[1], "Service Maintenance Mode",
                                                    "critical", svc, idx, notes=notes)
                self._write(idx, "checks")
            elif self._checks.pop(key, None) is not None:
                self._write(self._bump(svc["Service"]), "checks")

    def inject_raw(self, service: str, entry: Any) -> None:
        """Add ``entry`` verbatim to ``service``'s health response (malformed-data tests)."""
        with self._cond:
            self._raw.setdefault(service, []).append(entry)
            self._write(self._bump(service), "services")  # as an instance written

    def reset_index(self, to: int = 1) -> None:
        """Make every index go backwards (as after a raft snapshot restore)."""
        with self._cond:
            self._index = to
            self._svc_index = dict.fromkeys(self._svc_index, to)
            self._extinction = min(self._extinction, to)
            self._table_index = dict.fromkeys(TABLES, to)
            self._abandon += 1  # blocked queries answer at once, with the lower index
            self._cond.notify_all()

    def service_index(self, service: str) -> int:
        """The index a health query for ``service`` answers now."""
        with self._cond:
            return self._index_for(service)

    # ---- internals (caller holds self._cond) -----------------------------------
    def _next_index(self) -> int:
        self._index += 1
        self._cond.notify_all()
        return self._index

    def _bump(self, service: str) -> int:
        idx = self._next_index()
        self._svc_index[service] = idx
        return idx

    def _bump_for_check(self, check: dict[str, Any]) -> int:
        """A service check bumps its service; a node check every service on the node."""
        if check["ServiceName"]:
            return self._bump(check["ServiceName"])
        idx = self._next_index()
        for (node, _), svc in self._services.items():
            if node == check["Node"]:
                self._svc_index[svc["Service"]] = idx
        return idx

    def _index_for(self, service: str) -> int:
        """``maxIndexAndWatchChForService``: the service's index; for a missing service the
        last extinction index, else the catalog's max index."""
        if service in self._svc_index:
            return self._svc_index[service]
        return self._extinction or self._index

    def _check_doc(self, node: str, cid: str, name: str, status: str,
                   svc: dict[str, Any] | None, idx: int, notes: str = "",
                   output: str = "") -> dict[str, Any]:
        ttl = cid.startswith("service:")
        return {"Node": node, "CheckID": cid, "Name": name, "Status": status, "Notes": notes,
                "Output": output, "ServiceID": svc["ID"] if svc else "",
                "ServiceName": svc["Service"] if svc else "",
                "ServiceTags": list(svc["Tags"]) if svc else [], "Type": "ttl" if ttl else "",
                "Interfaces": None, "ExposedPort": 0, "Definition": {},
                "CreateIndex": idx, "ModifyIndex": idx}

    def _drop_service(self, node: str, sid: str) -> bool:
        """Remove an instance and its checks; True when it had checks."""
        self._services.pop((node, sid), None)
        keys = [k for k, v in self._checks.items() if k[0] == node and v["ServiceID"] == sid]
        for key in keys:
            del self._checks[key]
        return bool(keys)

    def _write(self, idx: int, *tables: str) -> None:
        """Tables written at raft index ``idx``: their index entries and contents change."""
        for table in tables:
            self._table_index[table] = idx
            self._table_version[table] += 1

    def _entries(self, service: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for (node, sid), svc in sorted(self._services.items()):
            if svc["Service"] != service:
                continue
            checks = [dict(c) for (n, _), c in sorted(self._checks.items())
                      if n == node and c["ServiceID"] in ("", sid)]
            out.append({"Node": dict(self._nodes[node]), "Service": _service_json(svc),
                        "Checks": checks})
        return out


def _service_json(svc: dict[str, Any]) -> dict[str, Any]:
    """``NodeService`` as Consul encodes it: ``Port`` omitted when 0 (``omitempty``)."""
    out = {k: v for k, v in svc.items() if not (k == "Port" and v == 0)}
    out.update(Proxy={"Mode": "", "MeshGateway": {}, "Expose": {}}, Connect={})
    return out


def _weights(raw: Any) -> dict[str, int]:
    """``ValidateWeights``: Passing >= 1, Warning >= 0, both <= 65535; absent -> 1/1."""
    if raw is None:
        return {"Passing": 1, "Warning": 1}
    w = fold(raw)
    passing, warning = int(w.get("passing", 0)), int(w.get("warning", 0))
    if passing < 1:
        raise HttpError(400, "Invalid Weights: Passing must be greater than 0")
    if warning < 0:
        raise HttpError(400, "Invalid Weights: Warning must be greater or equal than 0")
    if passing > 65535 or warning > 65535:
        raise HttpError(400, "Invalid Weights: DNS Weight must be between 0 and 65535")
    return {"Passing": passing, "Warning": warning}


def fold(obj: dict[str, Any]) -> dict[str, Any]:
    """Top-level keys lower-cased, ``_`` dropped (``CheckID``, ``checkid``, ``check_id``)."""
    return {k.lower().replace("_", ""): v for k, v in obj.items()}
