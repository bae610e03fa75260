"""Bad input: Consul health payloads. ``parse_entries`` must never raise, whatever the
body; every entry is accounted for exactly once (a replica, excluded for its health, or
skipped with a reason from ``SKIP_REASONS``); every replica it returns is well formed."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from caravan.discovery.consul_entries import SKIP_REASONS, parse_entries

SERVICE = "triton-llama"

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40),
                      st.floats(allow_nan=True), st.text(max_size=12))
json_any = st.recursive(json_leaf, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=8), kids, max_size=4)),
    max_leaves=20)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a plausible value, sometimes anything at all."""
    return st.one_of(strategy, json_any)


check = st.fixed_dictionaries({
    "CheckID": maybe(st.sampled_from(["serfHealth", "grpc", "_node_maintenance",
                                      "_service_maintenance:r1"])),
    "Status": maybe(st.sampled_from(["passing", "warning", "critical", "maintenance"])),
})
entry = st.fixed_dictionaries({
    "Node": maybe(st.fixed_dictionaries({"Node": st.text(max_size=5),
                                         "Address": maybe(st.sampled_from(
                                             ["10.0.0.1", "::1", "", "host.local"]))})),
    "Service": maybe(st.fixed_dictionaries({
        "ID": maybe(st.sampled_from(["r1", "r2", "r3", ""])),
        "Service": maybe(st.just(SERVICE)),
        "Address": maybe(st.sampled_from(["10.0.0.2", "", "not-an-ip", "fe80::1"])),
        "Port": maybe(st.integers(-5, 70000)),
        "Tags": maybe(st.lists(st.sampled_from(["draining", "gpu"]), max_size=2)),
        "Meta": maybe(st.dictionaries(st.sampled_from(["model", "weight", "metrics_port",
                                                       "zone"]),
                                      st.sampled_from(["llama", "3", "0", "x", "70000"]),
                                      max_size=4)),
        "Weights": maybe(st.fixed_dictionaries({"Passing": maybe(st.integers(0, 70000)),
                                                "Warning": maybe(st.integers(0, 3))})),
    })),
    "Checks": maybe(st.lists(check, max_size=3)),
})
body = st.one_of(json_any, st.lists(st.one_of(entry, json_any), max_size=6))


@settings(max_examples=400, deadline=200)
@given(body=body, allow_warning=st.booleans())
def test_parse_entries_never_raises_and_accounts_for_every_entry(
    body: Any, allow_warning: bool
) -> None:
    """Any Consul health body: no exception; each entry is a replica, excluded, or
    skipped with a known reason."""
    result = parse_entries(body, "llama", SERVICE, allow_warning)
    assert all(s.reason in SKIP_REASONS for s in result.skipped)
    if not isinstance(body, list):
        assert result.replicas == () and len(result.skipped) == 1
        return
    assert len(result.replicas) + len(result.skipped) + result.excluded == len(body)
    ids = [r.id for r in result.replicas]
    assert ids == sorted(set(ids)), "replicas sorted, ids unique"
    for r in result.replicas:
        ipaddress.ip_address(r.address)  # Envoy's EDS needs an IP literal
        assert 1 <= r.port <= 65535 and 1 <= r.weight <= 65535
        assert r.model == "llama"
        assert r.metrics_port is None or 1 <= r.metrics_port <= 65535
