"""Pure classification of one Consul health query's outcome, and how long to wait before
the next one. No I/O.

Every failure gets a ``Kind`` (a bounded Prometheus label), a short detail and, where the
operator has to act, the fix. What real Consul does, from its source:

- no answer at all: refused / reset / connect timeout / closed without a response
  -> ``UNREACHABLE`` (the agent is down or restarting); a read timeout -> ``TIMEOUT``;
- 500 whose text is one of ``agent/structs/errors.go``'s leader errors ("No cluster
  leader", "No known Consul servers", "Not ready to serve consistent reads", "Raft leader
  not found in server lookup mapping"), or any 5xx with ``X-Consul-KnownLeader: false``
  -> ``LEADERLESS``: the local agent is up but the servers have no leader;
- 429 (``go-connlimit``: too many connections from this IP; or an RPC rate limit)
  -> ``RATE_LIMITED``;
- 403 ("ACL not found": unknown token; "Permission denied") -> ``ACL_DENIED``;
- 200 with ``X-Consul-Results-Filtered-By-ACLs: true`` -> ``ACL_FILTERED``: entries the
  token may not read (``service:read`` *and* ``node:read`` are both needed) were dropped;
- 200 with an empty list, ``X-Consul-Default-ACL-Policy: deny`` and no token sent
  -> ``ACL_EMPTY``: Consul hides the filtered flag from an empty token
  (``maskResultsFilteredByACLs``), so the emptiness cannot be trusted;
- TLS, proxy and URL errors, 400, and 500 "No path to datacenter" -> ``CONFIG``;
- any other 5xx, or a 2xx whose body is not JSON -> ``SERVER``.

Retry delays (full jitter, at least ``initial_s / 2``): unreachable and timeouts cap at
``fast_max_s`` (probing a dead agent is free), leaderless at ``leader_max_s`` (about a
second: the agent itself holds a query up to ``rpc_hold_timeout`` while it retries, so
these probes are paced by Consul), rate limits, ACL problems and other server errors at
``slow_max_s`` (slower, but a fixed policy is seen within seconds), configuration errors
at ``config_max_s``.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from caravan.discovery.blocking import backoff_delay
from caravan.discovery.consul_http import HealthAnswer

LEADER_ERRORS = (
    "No cluster leader",
    "No known Consul servers",
    "Not ready to serve consistent reads",
    "Raft leader not found in server lookup mapping",
)
NO_DC_PATH = "No path to datacenter"
_CONFIG_EXCEPTIONS = {
    "SSLError": "TLS with Consul failed: check consul.scheme, consul.ca_file / CONSUL_CACERT "
                "and the agent's certificate",
    "ProxyError": "a proxy refused the Consul request: add the Consul address to NO_PROXY "
                  "(or unset HTTP_PROXY / HTTPS_PROXY for the control plane)",
    "InvalidURL": "the Consul URL is invalid: check consul.address / CONSUL_HTTP_ADDR",
    "InvalidSchema": "the Consul URL is invalid: check consul.address / CONSUL_HTTP_ADDR",
    "MissingSchema": "the Consul URL is invalid: check consul.address / CONSUL_HTTP_ADDR",
    "InvalidProxyURL": "the proxy URL in HTTP_PROXY / HTTPS_PROXY is invalid",
    "InvalidHeader": "the ACL token contains characters not allowed in an HTTP header: "
                     "check consul.token_file / CONSUL_HTTP_TOKEN",
}


class Kind(enum.Enum):
    """Why a query failed (values are metric labels)."""

    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    LEADERLESS = "leaderless"
    RATE_LIMITED = "rate_limited"
    ACL_DENIED = "acl_denied"
    ACL_FILTERED = "acl_filtered"
    ACL_EMPTY = "acl_empty"
    CONFIG = "config"
    SERVER = "server"

    @property
    def is_acl(self) -> bool:
        return self in (Kind.ACL_DENIED, Kind.ACL_FILTERED, Kind.ACL_EMPTY)


@dataclass(frozen=True)
class Failure:
    """A failed query: its kind, what happened (may contain Consul's text; redact before
    logging) and, for problems an operator must fix, how."""

    kind: Kind
    detail: str
    fix: str = ""


def acl_fix(service: str) -> str:
    """The fix for a token that may not read ``service``'s instances."""
    return (f"give the control plane's token service:read on {service!r} and node:read on "
            "every node (the policy is in docs/security.md)")


def classify_answer(answer: HealthAnswer, service: str, token_sent: bool) -> Failure | None:
    """None when ``answer`` is a usable replica list, else the failure it is."""
    if 200 <= answer.status < 300:
        return _classify_ok(answer, service, token_sent)
    text = str(answer.body).strip()[:300]
    if answer.status == 429:
        return Failure(Kind.RATE_LIMITED, f"429 {text}",
                       "too many connections or requests from this host to the Consul agent")
    if answer.status == 403:
        return Failure(Kind.ACL_DENIED, f"403 {text}", _denied_fix(text))
    if answer.status >= 500:
        return _classify_5xx(answer, text)
    return Failure(Kind.CONFIG, f"{answer.status} {text}",
                   "Consul refused the request: check consul.address, consul.datacenter "
                   "and consul.service_prefix")


def _classify_ok(answer: HealthAnswer, service: str, token_sent: bool) -> Failure | None:
    if answer.body_error is not None:
        return Failure(Kind.SERVER, f"{answer.status} {answer.body_error}")
    if answer.filtered_by_acls:
        return Failure(Kind.ACL_FILTERED, "Consul filtered the answer by ACLs "
                       "(X-Consul-Results-Filtered-By-ACLs: true)", acl_fix(service))
    deny = (answer.default_acl_policy or "").strip().lower() == "deny"
    if deny and not token_sent and answer.body == []:
        return Failure(Kind.ACL_EMPTY, "empty answer, Consul's default ACL policy is deny and "
                       "no token was sent (Consul hides filtering from an empty token)",
                       "set consul.token_file or CONSUL_HTTP_TOKEN for the control plane")
    return None


def _denied_fix(text: str) -> str:
    if "ACL not found" in text:
        return ("Consul does not know the token (deleted, expired, or from another "
                "datacenter): set a valid one in consul.token_file / CONSUL_HTTP_TOKEN")
    return "the token lacks a permission this query needs (docs/security.md has the policy)"


def _classify_5xx(answer: HealthAnswer, text: str) -> Failure:
    if NO_DC_PATH in text:
        return Failure(Kind.CONFIG, f"{answer.status} {text}",
                       "consul.datacenter names a datacenter this agent cannot reach")
    if answer.known_leader is False or any(e in text for e in LEADER_ERRORS):
        return Failure(Kind.LEADERLESS, f"{answer.status} {text}")
    return Failure(Kind.SERVER, f"{answer.status} {text}")


def classify_exception(exc: BaseException) -> Failure:
    """A query that got no HTTP answer (``requests`` / builtin exceptions, by class name so
    this module imports no HTTP library)."""
    names = [c.__name__ for c in type(exc).__mro__]
    detail = f"{type(exc).__name__}: {exc}"[:300]
    for name in names:
        if name in _CONFIG_EXCEPTIONS:
            return Failure(Kind.CONFIG, detail, _CONFIG_EXCEPTIONS[name])
    if "ReadTimeout" in names:
        return Failure(Kind.TIMEOUT, detail)
    if "ConnectionError" in names or "ChunkedEncodingError" in names:
        return Failure(Kind.UNREACHABLE, detail)
    return Failure(Kind.SERVER, detail)


@dataclass(frozen=True)
class RetryPolicy:
    """Caps of the retry delay per kind (seconds); see the module docstring."""

    initial_s: float = 0.5
    fast_max_s: float = 0.5
    leader_max_s: float = 1.0
    slow_max_s: float = 5.0
    config_max_s: float = 30.0

    def cap(self, kind: Kind) -> float:
        if kind in (Kind.UNREACHABLE, Kind.TIMEOUT):
            return self.fast_max_s
        if kind is Kind.LEADERLESS:
            return self.leader_max_s
        if kind is Kind.CONFIG:
            return self.config_max_s
        return self.slow_max_s

    def delay(self, kind: Kind, attempt: int, rng: random.Random) -> float:
        """Seconds before retry ``attempt`` (1 = first) after a failure of ``kind``."""
        cap = self.cap(kind)
        return backoff_delay(attempt, min(self.initial_s, cap), cap, rng)
