"""The Consul ACL policy the control plane's token needs, rendered from the spec (pure).

``GET /v1/health/service/:name`` answers only the instances the token may read: Consul's
``aclFilter.filterCheckServiceNodes`` keeps an entry when the token has ``node:read`` on
its node *and* ``service:read`` on its service, and silently drops the others. So the
control plane needs both, on every Triton service (``<service_prefix><model>``) and on
every node a replica may run on. Nothing else: it writes nothing to Consul, and it never
asks the agent for its datacenter. docs/security.md quotes this policy; a contract test
runs discovery with exactly this text against the Consul fake.
"""

from __future__ import annotations


def control_plane_policy(service_prefix: str) -> str:
    """HCL rules for the token of ``caravan xds --consul``."""
    return (f'service_prefix "{service_prefix}" {{ policy = "read" }}\n'
            'node_prefix "" { policy = "read" }\n')
