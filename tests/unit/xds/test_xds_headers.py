"""The header sanitising filter and the connection manager's edge settings (pure builders)."""

from __future__ import annotations

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2

from caravan.spec import parse_spec
from caravan.xds import headers
from caravan.xds import resources as res
from caravan.xds.jwt_auth import SUBJECT_HEADER
from caravan.xds.security import CLIENT_HEADER


def _rules(hcm_filter: object) -> list[mutation_rules_pb2.HeaderMutation]:
    cfg = header_mutation_pb2.HeaderMutation()
    hcm_filter.typed_config.Unpack(cfg)  # type: ignore[attr-defined]
    return list(cfg.mutations.request_mutations)


def test_first_filter_removes_forwarding_identity_and_envoy_headers_in_every_mode() -> None:
    spec = parse_spec({"models": [{"name": "m", "engine": {"model": "x"}}]})
    hcm = res.http_connection_manager(spec)
    assert hcm.http_filters[0].name == headers.FILTER_NAME
    rules = _rules(hcm.http_filters[0])
    removed = {r.remove for r in rules if r.remove}
    assert {"x-forwarded-for", "x-forwarded-host", "forwarded", "x-real-ip",
            res.UPSTREAM_HOST_HEADER, CLIENT_HEADER, SUBJECT_HEADER} == removed
    assert [r.remove_on_match.key_matcher.prefix for r in rules if not r.remove] == ["x-envoy-"]


def test_every_client_is_external_and_gets_envoys_forwarded_for() -> None:
    spec = parse_spec({"models": [{"name": "m", "engine": {"model": "x"}}]})
    hcm = res.http_connection_manager(spec)
    assert hcm.use_remote_address.value
    cidrs = [(c.address_prefix, c.prefix_len.value) for c in hcm.internal_address_config.cidr_ranges]
    assert cidrs == [("0.0.0.0", 32), ("::", 128)] and not hcm.internal_address_config.unix_sockets
    (xff,) = res.route_configuration(spec).request_headers_to_add
    assert (xff.header.key, xff.header.value) == (
        "x-forwarded-for", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%")
