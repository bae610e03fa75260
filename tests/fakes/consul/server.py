"""The fake Consul agent's HTTP server: connection limit, routing, token parsing, headers.

Headers (``agent/http.go``)
    ``wrap`` sets ``X-Consul-Default-ACL-Policy`` on every response (``setACLDefaultPolicy``;
    Consul's default config is ``acl_default_policy = "allow"``, so it is sent with ACLs off too).

Tokens
    ``parseTokenInternal`` / ``parseTokenFromHeaders``: ``?token`` first, then ``X-Consul-Token``,
    then ``Authorization: Bearer``; none -> the agent's default (user) token, else anonymous.

Connection limit
    ``max_conns_per_client`` (Consul's ``http_max_conns_per_client``, default 200): one
    connection too many from an IP gets ``hashicorp/go-connlimit``'s raw ``HTTP/1.1 429 Too
    Many Requests`` and is closed before any request is read
    (``HTTPConnStateFuncWithDefault429Handler``).
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.consul.agent import AgentWrite
from tests.fakes.consul.errors import HttpError
from tests.fakes.consul.query import parse_filter, parse_query
from tests.fakes.consul.reads import (
    Answer,
    agent_self,
    catalog_nodes,
    catalog_services,
    checks_in_state,
    health,
)

if TYPE_CHECKING:
    from tests.fakes.consul.fake import ConsulFake

_TOO_MANY_MSG = "Your IP is issuing too many concurrent connections, please rate limit your calls\n"
TOO_MANY_CONNS = (
    "HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\n"
    f"Content-Length: {len(_TOO_MANY_MSG)}\r\nConnection: close\r\n\r\n{_TOO_MANY_MSG}"
).encode()


@dataclass(frozen=True)
class Request:
    """One request served (``ConsulFake.requests``), with the token it sent."""

    method: str
    path: str
    query: dict[str, list[str]]
    token: str | None
    at: float  # time.monotonic()


def canonical_header(key: str) -> str:
    """Go's ``textproto.CanonicalMIMEHeaderKey``, which ``Header.Set`` applies: Consul sends
    ``X-Consul-Knownleader``, ``X-Consul-Default-Acl-Policy`` (HTTP names are case-blind)."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in key.split("-"))


class AgentServer(ThreadingHTTPServer):
    """HTTP/1.1 server with go-connlimit's per-client-IP connection limit."""

    daemon_threads = True

    def __init__(self, addr: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 fake: ConsulFake) -> None:
        self.fake = fake
        self._conns: dict[str, set[socket.socket]] = {}
        self._conns_lock = threading.Lock()
        super().__init__(addr, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        ip = client_address[0]
        with self._conns_lock:
            open_now = self._conns.setdefault(ip, set())
            refused = 0 < self.fake.max_conns_per_client <= len(open_now)
            if not refused:
                open_now.add(request)
        if refused:  # HTTPConnStateFuncWithDefault429Handler: raw 429, then close
            try:
                request.settimeout(0.01)
                request.sendall(TOO_MANY_CONNS)
            except OSError:
                pass
            super().shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            for conns in self._conns.values():
                conns.discard(request)
        super().shutdown_request(request)

    def open_count(self) -> int:
        with self._conns_lock:
            return sum(len(c) for c in self._conns.values())

    def drop_connections(self) -> None:
        """Close every open client connection (the agent went away)."""
        with self._conns_lock:
            conns = [c for group in self._conns.values() for c in group]
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (a timed-out blocking query) is normal, as for Consul."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, OSError)):
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    server_version = "consul-fake"
    protocol_version = "HTTP/1.1"  # keep-alive, as Go's net/http
    disable_nagle_algorithm = True  # TCP_NODELAY, Go's default for every TCP connection

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    @property
    def fake(self) -> ConsulFake:
        return self.server.fake  # type: ignore[attr-defined,no-any-return]

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        fake = self.fake
        generation = fake._generation
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        sent = self._token(query)
        fake._local.gone = self._client_gone
        with fake._cond:
            fake.requests.append(Request(method, url.path, query, sent, time.monotonic()))
        body = self._body()
        try:
            self._route(method, url.path, query, sent, body, generation)
        except HttpError as err:
            self._reply(err.code, err.body.encode(), "text/plain; charset=utf-8")

    def _client_gone(self) -> bool:
        """The client closed (or shut down) its end: readable with nothing to read."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _token(self, query: dict[str, list[str]]) -> str | None:
        """``parseTokenInternal``: ``?token``, then ``X-Consul-Token``, then Bearer."""
        if query.get("token", [""])[0]:
            return query["token"][0]
        if self.headers.get("X-Consul-Token"):
            return str(self.headers["X-Consul-Token"])
        parts = (self.headers.get("Authorization") or "").split(" ")
        if len(parts) > 1 and parts[0].lower() == "bearer":
            return " ".join(parts[1:]).strip().split(" ")[0]
        return None

    def _route(self, method: str, path: str, query: dict[str, list[str]], sent: str | None,
               body: bytes, generation: int) -> None:
        fake = self.fake
        token = sent or fake.agent_token or ""  # parseTokenWithDefault
        if path.startswith("/v1/health/service/") and method == "GET":
            q = parse_query(query)
            answer = health(fake, path.removeprefix("/v1/health/service/"), q, token, generation)
            if answer is None:
                self.close_connection = True  # dropped: the client sees the connection close
                return
            self._reply(answer.code, json.dumps(answer.body).encode(), "application/json",
                        answer.headers)
            return
        if method == "GET" and (path.startswith("/v1/health/state/")
                                or path in ("/v1/catalog/services", "/v1/catalog/nodes")):
            self._send(self._catalog_read(path, query, token, generation))
            return
        if path == "/v1/agent/self" and method == "GET":
            self._reply(200, json.dumps(agent_self(fake, token)).encode(), "application/json")
            return
        if method != "PUT" or not path.startswith("/v1/agent/"):
            raise HttpError(405 if path.startswith("/v1/") else 404,
                            "method or path not supported")
        with fake._cond:
            auth = fake._authorizer(token)
        AgentWrite(fake, auth).dispatch(path.removeprefix("/v1/agent/"), query, body)
        self._reply(200, b"", "text/plain")

    def _catalog_read(self, path: str, query: dict[str, list[str]], token: str,
                      generation: int) -> Answer | None:
        fake, q = self.fake, parse_query(query)
        flt = parse_filter(query.get("filter", [""])[0])
        if path.startswith("/v1/health/state/"):
            state = path.removeprefix("/v1/health/state/")
            return checks_in_state(fake, state, q, flt, token, generation)
        if path == "/v1/catalog/services":
            return catalog_services(fake, q, flt, token, generation)
        if flt is not None:
            raise HttpError(400, "the fake supports ?filter on ServiceName only")
        return catalog_nodes(fake, q, token, generation)

    def _send(self, answer: Answer | None) -> None:
        if answer is None:
            self.close_connection = True  # dropped: the client sees the connection close
            return
        self._reply(answer.code, json.dumps(answer.body).encode(), "application/json",
                    answer.headers)

    def _reply(self, code: int, body: bytes, ctype: str,
               headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        all_headers = {"X-Consul-Default-ACL-Policy": self.fake.acl_default_policy or "allow",
                       "Content-Type": ctype, "Content-Length": str(len(body)), **(headers or {})}
        for k, v in all_headers.items():
            self.send_header(canonical_header(k), v)
        self.end_headers()
        self.wfile.write(body)
