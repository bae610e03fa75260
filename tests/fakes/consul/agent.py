"""The fake Consul agent's write endpoints (``agent/agent_endpoint.go``). Test code only.

``PUT /v1/agent/service/register`` (``Name`` required; ``ID`` defaults to it; ``Check``/
``Checks`` get ids ``service:<id>`` / ``service:<id>:<n>`` and start ``critical`` unless
``Status`` is given; ``Weights`` checked by ``agent/structs/structs.go`` ``ValidateWeights``),
``PUT /v1/agent/service/deregister/:id``, ``PUT /v1/agent/service/maintenance/:id``,
``PUT /v1/agent/maintenance`` (node maintenance), ``PUT /v1/agent/check/{pass,warn,fail}/:id``,
``PUT /v1/agent/check/update/:id``. Agent endpoints act on the agent's own node.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tests.fakes.consul.acl import Authorizer
from tests.fakes.consul.catalog import fold
from tests.fakes.consul.errors import HttpError
from tests.fakes.consul.query import flag

if TYPE_CHECKING:
    from tests.fakes.consul.fake import ConsulFake


@dataclass
class AgentWrite:
    """Agent write endpoints, each checked against the token's rules (``agent_endpoint.go``:
    service writes need ``service:write``, node maintenance ``node:write``)."""

    fake: ConsulFake
    auth: Authorizer

    def dispatch(self, rest: str, query: dict[str, list[str]], body: bytes) -> None:
        kind, _, target = rest.partition("/")
        action, _, ident = target.partition("/")
        handlers: dict[tuple[str, str], Callable[[], None]] = {
            ("service", "register"): lambda: self._register(body),
            ("service", "deregister"): lambda: self._on_service(ident, self.fake.deregister),
            ("service", "maintenance"): lambda: self._service_maintenance(ident, query),
            ("maintenance", ""): lambda: self._node_maintenance(query),
            ("check", "update"): lambda: self._update(ident, body),
        }
        if kind == "check" and action in ("pass", "warn", "fail"):
            status = {"pass": "passing", "warn": "warning", "fail": "critical"}[action]
            self._check(ident, status, query.get("note", [""])[0])
            return
        handler = handlers.get((kind, action))
        if handler is None:
            raise HttpError(404, f"unsupported agent endpoint /v1/agent/{rest}")
        handler()

    def _deny(self, resource: str, name: str) -> None:
        """``acl/errors.go`` ``PermissionDeniedByACLError.Error``."""
        if not self.auth.allows(resource, name, "write"):
            raise HttpError(403, f"Permission denied: accessor  lacks permission "
                                 f"'{resource}:write' on {resource} {name}")

    def _register(self, body: bytes) -> None:
        try:
            doc = json.loads(body or b"{}")
        except json.JSONDecodeError as exc:
            raise HttpError(400, f"Request decode failed: {exc}") from None
        self._deny("service", str(fold(doc).get("name") or ""))
        self.fake.register_json(doc, self.fake.default_node)

    def _service_name(self, sid: str) -> str:
        svc = self.fake._services.get((self.fake.default_node, sid))
        if svc is None:
            raise HttpError(404, f'Unknown service ID "{sid}"')
        return str(svc["Service"])

    def _on_service(self, sid: str, action: Callable[[str], None]) -> None:
        self._deny("service", self._service_name(sid))
        action(sid)

    def _service_maintenance(self, sid: str, query: dict[str, list[str]]) -> None:
        if "enable" not in query:
            raise HttpError(400, "Missing value for enable")
        on = flag(query, "enable")
        reason = query.get("reason", [""])[0]
        self._on_service(sid, lambda s: self.fake.maintenance(s, on, reason))

    def _node_maintenance(self, query: dict[str, list[str]]) -> None:
        if "enable" not in query:
            raise HttpError(400, "Missing value for enable")
        self._deny("node", self.fake.default_node)
        self.fake.node_maintenance(flag(query, "enable"), query.get("reason", [""])[0])

    def _check(self, cid: str, status: str, output: str) -> None:
        check = self.fake._checks.get((self.fake.default_node, cid))
        if check is None:
            raise HttpError(404, f'Unknown check ID "{cid}"')
        if check["ServiceName"]:
            self._deny("service", check["ServiceName"])
        else:
            self._deny("node", self.fake.default_node)
        self.fake.update_check(cid, status, output)

    def _update(self, cid: str, body: bytes) -> None:
        doc = json.loads(body or b"{}")
        self._check(cid, doc.get("Status", ""), doc.get("Output", ""))
