"""The Consul reads discovery makes, with the response headers kept.

py-consul's ``health.service`` returns only ``(X-Consul-Index, body)`` and raises on any
non-2xx, which hides what matters in production: ``X-Consul-Results-Filtered-By-ACLs``,
``X-Consul-Default-ACL-Policy``, ``X-Consul-KnownLeader`` and the error text of a 500.
``PyConsulHealth`` therefore goes one layer down, to py-consul's own HTTP client
(``consul.std.HTTPClient.get`` with a callback that returns the whole response), so the
session, URL building and blocking-query timeout (``wait + wait/16 + timeout_s``) stay
py-consul's.

One ``PyConsulHealth`` serves every model of a process: a single ``requests`` session
whose pool holds one connection per datacenter-wide watch (a blocking query occupies its
connection until Consul answers) plus one for the non-blocking health reads
(``caravan.discovery.consul_watch``), never re-created, so neither the model count nor a
reconnect storm multiplies connections. The token travels in ``X-Consul-Token`` and is
never logged; ``set_token`` swaps it and ``abort`` ends the requests in flight (requests
has no cancel: the sockets of the session's connections are shut down, so a blocked query
returns at once with a connection error and its connection is not reused).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Protocol

from caravan.discovery.blocking import format_wait
from caravan.discovery.consul_settings import ConsulSettings
from caravan.discovery.consul_watch import WatchSpec

HEALTH_PATH = "/v1/health/service/"


@dataclass(frozen=True)
class HealthAnswer:
    """One HTTP answer of a Consul read (``/v1/health/service/:name`` or a watch).

    ``body`` is the decoded JSON for a 2xx (``None`` if it is not JSON: see
    ``body_error``), else the response text. Header fields are ``None`` when absent.
    """

    status: int
    body: Any
    index: str | None = None
    known_leader: bool | None = None
    filtered_by_acls: bool = False
    default_acl_policy: str | None = None
    body_error: str | None = None

    @classmethod
    def from_http(cls, status: int, headers: Any, text: str) -> HealthAnswer:
        """Build from a status, a case-insensitive header mapping and the body text."""
        leader = headers.get("X-Consul-KnownLeader")
        body: Any = text
        body_error = None
        if 200 <= status < 300:
            try:
                body = json.loads(text)
            except ValueError as exc:
                body, body_error = None, f"not JSON: {exc}"
        return cls(
            status=status, body=body, index=headers.get("X-Consul-Index"),
            known_leader=None if leader is None else leader.strip().lower() == "true",
            filtered_by_acls=(headers.get("X-Consul-Results-Filtered-By-ACLs") or "")
            .strip().lower() == "true",
            default_acl_policy=headers.get("X-Consul-Default-ACL-Policy"),
            body_error=body_error,
        )


class HealthClient(Protocol):
    """What discovery needs from Consul. Blocking; safe to call from several threads.

    ``service_health`` reads a service's instances without blocking. ``watch`` runs one
    blocking query: ``index`` 0 answers at once, otherwise Consul holds the reply until the
    watched index moves past ``index`` or ``wait_s`` elapses. Both return every HTTP answer
    (errors included) as a ``HealthAnswer`` and raise only when there is no HTTP answer at
    all (``requests`` exceptions: connection, TLS, proxy, URL, timeouts). ``set_token``
    swaps the ACL token of later requests; ``abort`` makes the requests in flight raise a
    connection error promptly.
    """

    def service_health(self, service: str) -> HealthAnswer: ...

    def watch(self, spec: WatchSpec, index: int, wait_s: float) -> HealthAnswer: ...

    def set_token(self, token: str | None) -> None: ...

    def abort(self) -> None: ...


class PyConsulHealth:
    """``HealthClient`` over py-consul's std (requests) HTTP client.

    ``pool_size`` bounds the connections kept open (the watches plus the reader). An IPv6
    host is bracketed, since py-consul joins ``scheme://host:port`` verbatim.
    """

    def __init__(self, settings: ConsulSettings, pool_size: int = 4) -> None:
        import consul
        import requests.adapters

        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        self._client = consul.Consul(
            host=host, port=settings.port, token=settings.token, scheme=settings.scheme,
            dc=settings.datacenter, verify=settings.verify, connections_timeout=settings.timeout_s,
        )
        self._live: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=max(1, pool_size))
        adapter.poolmanager.pool_classes_by_scheme = _tracking_pools(self._track)
        session = self._client.http.session
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._token = settings.token
        self._dc = settings.datacenter

    def service_health(self, service: str) -> HealthAnswer:
        return self._get(HEALTH_PATH + service, [])

    def watch(self, spec: WatchSpec, index: int, wait_s: float) -> HealthAnswer:
        params = list(spec.params)
        if index > 0:
            params += [("index", str(index)), ("wait", format_wait(wait_s))]
        return self._get(spec.path, params)

    def set_token(self, token: str | None) -> None:
        self._token = token

    def abort(self) -> None:
        with self._lock:
            conns = list(self._live)
        for conn in conns:
            sock = getattr(conn, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _track(self, conn: Any) -> None:
        with self._lock:
            self._live.add(conn)

    def _get(self, path: str, params: list[tuple[str, str]]) -> HealthAnswer:
        if self._dc:
            params = [*params, ("dc", self._dc)]
        headers = {"X-Consul-Token": self._token} if self._token else {}
        return self._client.http.get(  # type: ignore[no-any-return]
            _to_answer, path, params=params, headers=headers)


def _tracking_pools(track: Any) -> dict[str, type]:
    """urllib3 pool classes whose connections report themselves to ``track`` once
    connected, so ``abort`` can find their sockets."""
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class Conn(HTTPConnection):
        def connect(self) -> None:
            super().connect()
            track(self)

    class TlsConn(HTTPSConnection):
        def connect(self) -> None:
            super().connect()
            track(self)

    class Pool(HTTPConnectionPool):
        ConnectionCls = Conn

    class TlsPool(HTTPSConnectionPool):
        ConnectionCls = TlsConn

    return {"http": Pool, "https": TlsPool}


def _to_answer(response: Any) -> HealthAnswer:
    """py-consul callback: ``consul.base.Response(code, headers, body)`` -> ``HealthAnswer``."""
    return HealthAnswer.from_http(response.code, response.headers, response.body)
