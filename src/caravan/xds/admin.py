"""The control plane's admin HTTP endpoint, on its own port.

Routes (GET or HEAD; anything else is 405):

- ``/healthz``        200 while the process serves HTTP (liveness);
- ``/readyz``         200 once ``state.ready()`` (first snapshot built), else 503; when the
                      state also reports discovery problems (``DiscoveryStatus``), one line
                      per model follows (readiness does not change: the last snapshot is
                      served while Consul is unusable, which is the point);
- ``/metrics``        Prometheus text exposition of the injected registry;
- ``/debug/snapshot`` ``state.snapshot_json()`` as JSON (resources + versions);
- ``/debug/clients``  ``state.clients_json()`` as JSON (nodes, ACKed versions per type).

``/debug/*`` answer loopback clients only (403 otherwise): the port is on the node IP
in Nomad for Prometheus and Consul, and the debug views show every node, peer and
the whole configuration (keys blanked). Read them on the node (``nomad alloc exec``).

A tiny HTTP/1.1 server on asyncio streams (one request per connection, then
close), so every ``state`` method is called on the event-loop thread that owns
the control plane: no locking needed. Requests are bounded (8 KiB line, 100
headers, 5 s to send them). An exception from ``state`` becomes a 500 and a log
line; the server keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 5.0
MAX_LINE = 8192
MAX_HEADERS = 100
JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"
_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error", 503: "Service Unavailable"}


class ControlPlaneState(Protocol):
    """What the admin endpoint reads from the control plane (event-loop thread only)."""

    def ready(self) -> bool:
        """True once the first snapshot has been built."""
        ...

    def snapshot_json(self) -> dict[str, Any]:
        """The current snapshot as JSON-able data (resources with their versions)."""
        ...

    def clients_json(self) -> list[dict[str, Any]]:
        """Connected Envoys: node id and ACKed version per resource type."""
        ...


@runtime_checkable
class DiscoveryStatus(Protocol):
    """Optional part of a ``ControlPlaneState``: what is wrong with replica discovery."""

    def discovery_problems(self) -> dict[str, str]:
        """Model -> problem (empty when discovery is healthy)."""
        ...


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = TEXT_TYPE
    headers: tuple[tuple[str, str], ...] = field(default=())


def _json(data: Any) -> Response:
    return Response(200, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode(), JSON_TYPE)


def readyz(state: ControlPlaneState) -> Response:
    """200 ``ready`` once the first snapshot is built, else 503; plus a
    ``discovery: <model>: <problem>`` line per model whose discovery is failing."""
    problems = state.discovery_problems() if isinstance(state, DiscoveryStatus) else {}
    lines = "".join(f"discovery: {m}: {p}\n" for m, p in sorted(problems.items()))
    if state.ready():
        return Response(200, ("ready\n" + lines).encode())
    return Response(503, ("not ready: no snapshot built yet\n" + lines).encode())


def is_loopback(peer: object) -> bool:
    """Whether an asyncio ``peername`` (``(host, port, ...)``) is a loopback address."""
    if not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
        return False
    try:
        return ipaddress.ip_address(peer[0].split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def route(method: str, target: str, state: ControlPlaneState,
          registry: CollectorRegistry, local: bool = True) -> Response:
    """Answer one request (``target`` may carry a query string, which is ignored).
    ``local``: the client is on loopback; ``/debug/*`` is refused (403) otherwise."""
    path = target.split("?", 1)[0]
    if path.startswith("/debug/") and not local:
        return Response(403, b"debug endpoints answer loopback clients only\n")
    handlers: dict[str, Callable[[], Response]] = {
        "/healthz": lambda: Response(200, b"ok\n"),
        "/readyz": lambda: readyz(state),
        "/metrics": lambda: Response(200, generate_latest(registry), CONTENT_TYPE_LATEST),
        "/debug/snapshot": lambda: _json(state.snapshot_json()),
        "/debug/clients": lambda: _json(state.clients_json()),
    }
    handler = handlers.get(path)
    if handler is None:
        listing = "".join(f"  {p}\n" for p in handlers)
        return Response(404, f"no such endpoint {path!r}; try:\n{listing}".encode())
    if method not in ("GET", "HEAD"):
        return Response(405, f"{method} not allowed; use GET\n".encode(),
                        headers=(("Allow", "GET, HEAD"),))
    try:
        return handler()
    except Exception as exc:
        log.exception("admin endpoint failed", extra={"path": path})
        return Response(500, f"internal error: {type(exc).__name__}\n".encode())


def encode(resp: Response, head_only: bool = False) -> bytes:
    """Serialise ``resp`` as an HTTP/1.1 response that closes the connection."""
    lines = [f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Unknown')}",
             f"Content-Type: {resp.content_type}", f"Content-Length: {len(resp.body)}",
             "Connection: close", *(f"{k}: {v}" for k, v in resp.headers)]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + resp.body


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str] | None:
    """(method, target) of one request, or None for a malformed one."""
    line = await reader.readline()
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    for _ in range(MAX_HEADERS):
        if (await reader.readline()) in (b"\r\n", b"\n", b""):
            return parts[0].upper(), parts[1]
    return None


class AdminServer:
    """The admin endpoint. ``start()`` then ``stop()``, on one event loop."""

    def __init__(self, state: ControlPlaneState, registry: CollectorRegistry,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self._state = state
        self._registry = registry
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (the OS's pick when constructed with port 0)."""
        if self._server is None:
            raise RuntimeError("admin server not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> AdminServer:
        self._server = await asyncio.start_server(self._serve, self._host, self._port,
                                                  limit=MAX_LINE)
        log.info("admin endpoint listening", extra={"host": self._host, "port": self.port})
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(_read_request(reader), READ_TIMEOUT_S)
            if request is None:
                writer.write(encode(Response(400, b"malformed HTTP request\n")))
            else:
                method, target = request
                local = is_loopback(writer.get_extra_info("peername"))
                resp = route(method, target, self._state, self._registry, local)
                writer.write(encode(resp, head_only=method == "HEAD"))
            await writer.drain()
        except (TimeoutError, ValueError, ConnectionError):
            pass  # slow, oversized or vanished client: just close
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def start_admin(state: ControlPlaneState, registry: CollectorRegistry,
                      host: str = "127.0.0.1", port: int = 0) -> AdminServer:
    """Start an ``AdminServer`` on ``host:port``; ``await server.stop()`` to end it."""
    return await AdminServer(state, registry, host, port).start()
