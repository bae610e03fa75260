"""A fake of the Consul HTTP API parts Caravan uses, following Consul's source. Test code only.

Served by a real HTTP/1.1 server on 127.0.0.1 (free port) in a thread, so py-consul talks
to it over TCP (keep-alive included) exactly as it would to a local agent. Each rule names
the Consul function it follows (paths in hashicorp/consul unless said otherwise), in the
module that implements it:

    fake.py     ``ConsulFake``: lifecycle, cluster failures, ACL token administration
    catalog.py  nodes, service instances, checks; raft indexes and table versions
    reads.py    health and datacenter-wide blocking reads, ``setMeta`` headers, the RPC path
    agent.py    the agent's write endpoints, each checked against the token's rules
    server.py   HTTP server: per-client connection limit, routing, token parsing
    acl.py      HCL rules -> ``Authorizer``
    query.py    query options (``?index``, ``?wait``, ``?filter``, flags)
    errors.py   ``HttpError`` and Consul's error texts

Test controls: ``stop()``, ``restart()`` (same port, state kept), ``lose_leader()`` /
``lose_servers()`` / ``regain_leader()``, ``set_token()`` / ``delete_token()`` /
``set_anonymous_policy()`` (policy edits and token swaps at run time), ``node_check()``,
``node_maintenance()``, ``set_node_address()``, ``reset_index()`` (index goes backwards), ``inject_raw()`` (a
malformed entry), ``stall()`` (accept but never answer), ``requests`` (every request served,
with its token) and ``open_connections()``.
"""

from tests.fakes.consul.fake import ConsulFake

__all__ = ["ConsulFake"]
