"""The one Consul call discovery makes, with the response headers kept.

py-consul's ``health.service`` returns only ``(X-Consul-Index, body)`` and raises on any
non-2xx, which hides what matters in production: ``X-Consul-Results-Filtered-By-ACLs``,
``X-Consul-Default-ACL-Policy``, ``X-Consul-KnownLeader`` and the error text of a 500.
``PyConsulHealth`` therefore goes one layer down, to py-consul's own HTTP client
(``consul.std.HTTPClient.get`` with a callback that returns the whole response), so the
session, URL building and blocking-query timeout (``wait + wait/16 + timeout_s``) stay
py-consul's.

One ``PyConsulHealth`` serves every model of a process: a single ``requests`` session
whose pool holds one connection per model in flight (a blocking query occupies its
connection until Consul answers) and is never re-created, so reconnect storms do not
multiply connections. The token travels in ``X-Consul-Token`` and is never logged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from caravan.discovery.blocking import format_wait
from caravan.discovery.consul_settings import ConsulSettings

HEALTH_PATH = "/v1/health/service/"


@dataclass(frozen=True)
class HealthAnswer:
    """One HTTP answer of ``GET /v1/health/service/:name``.

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

    ``index`` 0 means a non-blocking query; otherwise Consul holds the reply until the
    service changes past ``index`` or ``wait_s`` elapses. Returns every HTTP answer
    (errors included) as a ``HealthAnswer``; raises only when there is no HTTP answer at
    all (``requests`` exceptions: connection, TLS, proxy, URL, timeouts).
    """

    def service_health(self, service: str, index: int, wait_s: float) -> HealthAnswer: ...


class PyConsulHealth:
    """``HealthClient`` over py-consul's std (requests) HTTP client.

    ``pool_size`` bounds the connections kept open (one per model querying at once).
    An IPv6 host is bracketed, since py-consul joins ``scheme://host:port`` verbatim.
    """

    def __init__(self, settings: ConsulSettings, pool_size: int = 10) -> None:
        import consul
        import requests.adapters

        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        self._client = consul.Consul(
            host=host, port=settings.port, token=settings.token, scheme=settings.scheme,
            dc=settings.datacenter, verify=settings.verify, connections_timeout=settings.timeout_s,
        )
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=max(1, pool_size))
        session = self._client.http.session
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self._token = settings.token
        self._dc = settings.datacenter

    def service_health(self, service: str, index: int, wait_s: float) -> HealthAnswer:
        params: list[tuple[str, str]] = []
        if index > 0:
            params += [("index", str(index)), ("wait", format_wait(wait_s))]
        if self._dc:
            params.append(("dc", self._dc))
        headers = {"X-Consul-Token": self._token} if self._token else {}
        return self._client.http.get(  # type: ignore[no-any-return]
            _to_answer, HEALTH_PATH + service, params=params, headers=headers)


def _to_answer(response: Any) -> HealthAnswer:
    """py-consul callback: ``consul.base.Response(code, headers, body)`` -> ``HealthAnswer``."""
    return HealthAnswer.from_http(response.code, response.headers, response.body)
