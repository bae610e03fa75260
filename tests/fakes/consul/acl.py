"""Consul ACLs in the fake: HCL rules -> an authorizer. Test code only.

Tokens and ACLs
    ``parseTokenInternal`` / ``parseTokenFromHeaders``: ``?token`` first, then ``X-Consul-Token``,
    then ``Authorization: Bearer``; none -> the agent's default (user) token, else anonymous.
    ``agent/consul/acl.go`` ``ResolveToken``: an unknown secret is 403 ``ACL not found``.
    Policies are the HCL rules Consul uses (``service``/``service_prefix``/``node``/
    ``node_prefix``/``agent``/``agent_prefix`` blocks with ``policy = "read"|"write"|"deny"``);
    an exact rule beats prefixes and the longest prefix wins, else the default policy
    (``acl/policy_authorizer.go``). Reads are filtered, never refused:
    ``aclFilter.filterCheckServiceNodes`` drops an entry unless the token may read its node
    *and* its service (``allowNode`` && ``allowService``) and the answer stays 200. The
    filtered flag is hidden when the request's token is empty (``agent/consul/rpc.go``
    ``maskResultsFilteredByACLs``: the empty token means no agent default token either).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MANAGEMENT = "management"  # a token with the builtin global-management policy
_RULE = re.compile(r'(service|service_prefix|node|node_prefix|agent|agent_prefix)\s+"([^"]*)"'
                   r'\s*\{\s*policy\s*=\s*"(read|write|deny|list)"\s*\}')


@dataclass(frozen=True)
class Authorizer:
    """One token's effective rules (``acl/policy_authorizer.go``): per resource, exact names
    and prefixes -> policy; an exact rule wins, then the longest prefix, then ``default``."""

    default: str  # "allow" | "deny"
    exact: dict[str, dict[str, str]] = field(default_factory=dict)
    prefix: dict[str, dict[str, str]] = field(default_factory=dict)
    management: bool = False

    @classmethod
    def parse(cls, rules: str, default: str) -> Authorizer:
        """HCL rules (the subset Caravan's policies use) -> an authorizer. ValueError on any
        text that is not a rule, so a typo in a documented policy fails the test using it."""
        if rules == MANAGEMENT:
            return cls(default, management=True)
        leftover = _RULE.sub("", rules).strip()
        if leftover:
            raise ValueError(f"not a Consul ACL rule: {leftover[:60]!r}")
        exact: dict[str, dict[str, str]] = {}
        prefix: dict[str, dict[str, str]] = {}
        for kind, name, policy in _RULE.findall(rules):
            table = prefix if kind.endswith("_prefix") else exact
            table.setdefault(kind.removesuffix("_prefix"), {})[name] = policy
        return cls(default, exact, prefix)

    def policy(self, resource: str, name: str) -> str:
        if self.management:
            return "write"
        exact = self.exact.get(resource, {})
        if name in exact:
            return exact[name]
        matches = [p for p in self.prefix.get(resource, {}) if name.startswith(p)]
        if matches:
            return self.prefix[resource][max(matches, key=len)]
        return "write" if self.default == "allow" else "deny"

    def allows(self, resource: str, name: str, access: str = "read") -> bool:
        policy = self.policy(resource, name)
        return policy == "write" or (access == "read" and policy in ("read", "list"))
