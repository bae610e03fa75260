"""The errors the fake Consul agent answers with (``agent/structs/errors.go``, ``rpc.go``)."""

from __future__ import annotations

NO_LEADER = "No cluster leader"
NO_SERVERS = "No known Consul servers"
NO_DC_PATH = "No path to datacenter"


class HttpError(Exception):
    """An error answer: ``code`` and a plain-text ``body`` (no Consul meta headers)."""

    def __init__(self, code: int, body: str) -> None:
        super().__init__(body)
        self.code, self.body = code, body
