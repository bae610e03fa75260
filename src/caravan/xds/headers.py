"""Client-sent forwarding and identity headers, replaced by Envoy's own (pure builders).

A client can send any header. Those that replicas, logs or Envoy itself would read as
facts about the request are removed on the way in, before any other filter, by one
``envoy.filters.http.header_mutation`` filter (``sanitize_filter``):

* forwarding: ``x-forwarded-for``, ``x-forwarded-host``, ``forwarded``, ``x-real-ip``;
  the route configuration then sets ``x-forwarded-for`` to the downstream peer's
  address (``forwarded_for``), overwriting, so the replica sees Envoy's value only;
* ``x-envoy-*`` (every header with that prefix: retry and timeout overrides such as
  ``x-envoy-max-retries`` or ``x-envoy-upstream-rq-timeout-ms``, ``x-envoy-internal``),
  which Envoy would otherwise honour or forward;
* Caravan's own: ``x-caravan-upstream`` (a response header; no client should send it)
  and the identity headers Envoy sets after authentication (``x-caravan-client`` in
  API-key mode, ``x-caravan-subject`` and the optional JWT payload header in JWT mode),
  removed in every mode so no client-chosen identity reaches a replica.

``x-request-id``: the connection manager treats every client as external
(``use_remote_address``; ``internal_address_config`` lists only the unspecified
addresses, ``NO_PEER``), so it generates a
fresh id for every request instead of keeping the client's (Envoy's
``preserve_external_request_id`` defaults to false).

Tested on the real Envoy: ``tests/integration/security/test_security_headers.py``.
"""

from __future__ import annotations

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2, wrappers_pb2

from caravan.spec import PlatformSpec, names
from caravan.xds import jwt_auth, security

FORWARDING = ("x-forwarded-for", "x-forwarded-host", "forwarded", "x-real-ip")
ENVOY_PREFIX = "x-envoy-"
UPSTREAM_HOST_HEADER = names.UPSTREAM_HOST_HEADER  # the response header naming the replica
FILTER_NAME = "envoy.filters.http.header_mutation"
# Envoy's internal_address_config: without cidr_ranges it treats private and loopback
# peers as internal (and keeps their x-request-id); the unspecified addresses, which no
# peer has, make every peer external.
NO_PEER = (("0.0.0.0", 32), ("::", 128))


def removed_headers(spec: PlatformSpec) -> tuple[str, ...]:
    """Every exact header name the sanitising filter removes (the ``x-envoy-`` prefix aside)."""
    removed = [*FORWARDING, UPSTREAM_HOST_HEADER, security.CLIENT_HEADER, jwt_auth.SUBJECT_HEADER]
    jwt = spec.security.jwt if spec.security is not None else None
    if jwt is not None and jwt.forward_payload_header:
        removed.append(jwt.forward_payload_header)
    return tuple(removed)


def sanitize_filter(spec: PlatformSpec) -> hcm_pb2.HttpFilter:
    """The first HTTP filter: removes ``removed_headers`` and every ``x-envoy-*`` header."""
    rules = [mutation_rules_pb2.HeaderMutation(remove=n) for n in removed_headers(spec)]
    rules.append(mutation_rules_pb2.HeaderMutation(
        remove_on_match=mutation_rules_pb2.HeaderMutation.RemoveOnMatch(
            key_matcher=string_pb2.StringMatcher(prefix=ENVOY_PREFIX))))
    cfg = header_mutation_pb2.HeaderMutation(
        mutations=header_mutation_pb2.Mutations(request_mutations=rules))
    packed = any_pb2.Any()
    packed.Pack(cfg)
    return hcm_pb2.HttpFilter(name=FILTER_NAME, typed_config=packed)


def treat_every_client_as_external(hcm: hcm_pb2.HttpConnectionManager) -> None:
    """Envoy's own ``x-request-id`` for every request (see the module doc)."""
    hcm.use_remote_address.value = True
    hcm.internal_address_config.CopyFrom(hcm_pb2.HttpConnectionManager.InternalAddressConfig(
        unix_sockets=False, cidr_ranges=[address_pb2.CidrRange(
            address_prefix=a, prefix_len=wrappers_pb2.UInt32Value(value=n))
                                         for a, n in NO_PEER]))


def forwarded_for() -> base_pb2.HeaderValueOption:
    """``x-forwarded-for: <downstream peer address>``, overwriting (route configuration)."""
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key="x-forwarded-for",
                                    value="%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )
