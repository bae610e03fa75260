"""``ConsulFake``: one fake agent over its catalog -- lifecycle, cluster failures, ACL tokens.

Failures
    * ``stop()``: connections refused, open and blocked ones dropped (agent down).
    * ``lose_leader(hold_s)`` / ``lose_servers()`` / ``regain_leader()``: the agent's RPC path
      (how reads answer then: ``reads``).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

from tests.fakes.consul.acl import MANAGEMENT, Authorizer
from tests.fakes.consul.catalog import Catalog
from tests.fakes.consul.errors import HttpError
from tests.fakes.consul.server import AgentServer, Handler, Request

from caravan.local.process import free_port


@dataclass
class Leader:
    """Cluster state as the agent sees it: ``ok``, ``no_leader`` or ``no_servers``."""

    state: str = "ok"
    hold_s: float = 0.0
    lost_at: float = 0.0


class ConsulFake(Catalog):
    """One fake agent + catalog. Thread-safe; helpers work whether running or not.

    ACLs are off unless ``acl_default_policy`` is "allow"/"deny" or ``token`` is given (the
    latter: default deny, ``token`` a management token). ``agent_token`` is the agent's
    default token, used for requests that carry none.
    """

    def __init__(self, token: str | None = None, node: str = "node-1",
                 node_address: str = "127.0.0.1", datacenter: str = "dc1", seed: int = 0, *,
                 acl_default_policy: str | None = None, agent_token: str | None = None,
                 max_conns_per_client: int = 200) -> None:
        super().__init__(datacenter, node)
        self.token = token
        self.agent_token = agent_token
        self.max_conns_per_client = max_conns_per_client
        self.acl_default_policy = acl_default_policy or ("deny" if token else None)
        self.requests: list[Request] = []
        self._rng = random.Random(seed)
        self._local = threading.local()  # the serving thread's "client hung up?" probe
        self._tokens: dict[str, Authorizer] = {}
        self._anonymous = ""
        self._leader = Leader()
        self._generation = 0  # bumped by stop(): blocked requests of old generations are dropped
        self._stalled = False
        self._server: AgentServer | None = None
        self.port = 0
        self.add_node(node, node_address)
        if token is not None:
            self.set_token(token, MANAGEMENT)

    # ---- lifecycle -------------------------------------------------------------
    def start(self) -> str:
        """Listen (on a free port the first time, the same port after) -> base URL."""
        if self._server is not None:
            return self.base_url
        self.port = self.port or free_port()
        server = AgentServer(("127.0.0.1", self.port), Handler, self)
        threading.Thread(target=server.serve_forever, args=(0.05,), name="consul-fake",
                         daemon=True).start()
        self._server = server
        return self.base_url

    def stop(self) -> None:
        """Stop listening (connections refused), close open connections, drop blocked queries."""
        server, self._server = self._server, None
        with self._cond:
            self._generation += 1
            self._cond.notify_all()
        if server is not None:
            server.shutdown()
            server.server_close()
            server.drop_connections()

    def restart(self) -> str:
        self.stop()
        return self.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def open_connections(self) -> int:
        """Client connections open right now (all from 127.0.0.1)."""
        return self._server.open_count() if self._server is not None else 0

    def __enter__(self) -> ConsulFake:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- cluster failures ------------------------------------------------------
    def lose_leader(self, hold_s: float = 0.0) -> None:
        """Servers lose their leader; queries are held ``hold_s`` then answered 500."""
        with self._cond:
            self._leader = Leader("no_leader", hold_s, time.monotonic())
            self._cond.notify_all()

    def lose_servers(self) -> None:
        """The agent knows no server: every query is answered 500 at once."""
        with self._cond:
            self._leader = Leader("no_servers", 0.0, time.monotonic())
            self._cond.notify_all()

    def regain_leader(self) -> None:
        """A leader is elected again (index continues from where it was)."""
        with self._cond:
            self._leader = Leader()
            self._cond.notify_all()

    # ---- ACL administration ----------------------------------------------------
    def set_token(self, secret: str, rules: str) -> None:
        """Create or replace token ``secret`` with HCL ``rules`` (or ``MANAGEMENT``): a policy
        edit or token swap. As in Consul, it wakes no blocked query (ACL changes are not in
        a query's watch set); the next evaluation of a query -- a new one, or a blocked one
        woken by a catalog change or its wait -- uses it (``filterACL`` resolves the token
        on every run of the blocking query's function)."""
        if self.acl_default_policy is None:
            self.acl_default_policy = "deny"
        with self._cond:
            self._tokens[secret] = Authorizer.parse(rules, self.acl_default_policy)

    def delete_token(self, secret: str) -> None:
        with self._cond:
            self._tokens.pop(secret, None)

    def set_anonymous_policy(self, rules: str) -> None:
        """Rules of the anonymous token (used by requests with no token and no agent token)."""
        Authorizer.parse(rules, "deny")  # validate
        with self._cond:
            self._anonymous = rules

    def _authorizer(self, token: str) -> Authorizer:
        """``ResolveToken``: "" is anonymous; an unknown secret raises 403 ``ACL not found``."""
        default = self.acl_default_policy
        if default is None:
            return Authorizer("allow")
        if token == "":
            return Authorizer.parse(self._anonymous, default)
        found = self._tokens.get(token)
        if found is None:
            raise HttpError(403, "ACL not found")
        return found

    # ---- test controls ---------------------------------------------------------
    def stall(self, on: bool = True) -> None:
        """While on, health queries are accepted but never answered (until stop/off)."""
        with self._cond:
            self._stalled = on
            self._cond.notify_all()

    def served(self, path_prefix: str = "/v1/health/service/", since: float = 0.0) -> int:
        """How many requests under ``path_prefix`` arrived at or after ``since`` (monotonic)."""
        with self._cond:
            return sum(1 for r in self.requests if r.path.startswith(path_prefix) and r.at >= since)
