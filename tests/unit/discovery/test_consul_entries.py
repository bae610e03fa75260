"""Table-driven tests of the pure Consul entry parser."""

from __future__ import annotations

from typing import Any

import pytest

from caravan.discovery.consul_entries import SKIP_REASONS, parse_entries
from caravan.discovery.types import HealthStatus, Replica

SVC = "triton-llama"


def entry(sid: str = "a", *, address: Any = "10.0.0.1", node_address: Any = "10.9.9.9",
          port: Any = 8001, tags: Any = None, meta: Any = None, weights: Any = None,
          checks: Any = ("passing",), service: Any = SVC, dc: str = "dc1") -> dict[str, Any]:
    """A health entry; ``checks`` is a list of statuses, or (check id, status) pairs."""
    chk = [
        {"CheckID": c[0], "Status": c[1]} if isinstance(c, tuple) else
        {"CheckID": f"service:{sid}", "Status": c}
        for c in checks
    ]
    svc: dict[str, Any] = {"ID": sid, "Service": service, "Address": address, "Port": port,
                           "Tags": tags or [], "Meta": meta or {}}
    if weights is not None:
        svc["Weights"] = weights
    return {"Node": {"Node": "n1", "Address": node_address, "Datacenter": dc},
            "Service": svc, "Checks": [{"CheckID": "serfHealth", "Status": "passing"}, *chk]}


def rep(sid: str = "a", **kw: Any) -> Replica:
    base: dict[str, Any] = {"id": sid, "model": "llama", "address": "10.0.0.1", "port": 8001,
                            "zone": "dc1"}
    return Replica(**{**base, **kw})


MAINT = ("_service_maintenance:a", "critical")

ACCEPTED = [
    ("passing", entry(), rep()),
    ("address falls back to node", entry(address=""), rep(address="10.9.9.9")),
    ("ipv6 normalised", entry(address="FD00::1"), rep(address="fd00::1")),
    ("meta zone wins over datacenter", entry(meta={"zone": "us-east-1a"}), rep(zone="us-east-1a")),
    ("meta weight wins", entry(meta={"weight": "7"}, weights={"Passing": 3, "Warning": 1}),
     rep(weight=7)),
    ("weights.passing", entry(weights={"Passing": 3, "Warning": 1}), rep(weight=3)),
    ("metrics port", entry(meta={"metrics_port": "8002"}), rep(metrics_port=8002)),
    ("meta model matches", entry(meta={"model": "llama"}), rep()),
    ("maintenance drains", entry(checks=["passing", MAINT]), rep(health=HealthStatus.DRAINING)),
    ("node maintenance drains", entry(checks=[("_node_maintenance", "critical")]),
     rep(health=HealthStatus.DRAINING)),
    ("draining tag", entry(tags=["draining"]), rep(health=HealthStatus.DRAINING)),
    ("no checks counts as passing", entry(checks=[]), rep()),
]


@pytest.mark.parametrize(("e", "want"), [(e, w) for _, e, w in ACCEPTED],
                         ids=[i for i, _, _ in ACCEPTED])
def test_accepted_entries_map_to_replicas(e: dict[str, Any], want: Replica) -> None:
    result = parse_entries([e], "llama", SVC)
    assert result.replicas == (want,)
    assert result.skipped == ()


HEALTH = [
    # (id, statuses, allow_warning, expected health or None = excluded)
    ("warning excluded by default", ["warning"], False, None),
    ("warning allowed by spec", ["warning"], True, HealthStatus.HEALTHY),
    ("critical excluded", ["critical"], False, None),
    ("critical excluded even if warning allowed", ["critical"], True, None),
    ("unknown status is critical", ["bogus"], True, None),
    ("maintenance but dead is excluded", ["critical", MAINT], False, None),
    ("maintenance with warning drains", ["warning", MAINT], False, HealthStatus.DRAINING),
]


@pytest.mark.parametrize(("checks", "allow", "want"), [h[1:] for h in HEALTH],
                         ids=[h[0] for h in HEALTH])
def test_health_mapping(checks: list[Any], allow: bool, want: HealthStatus | None) -> None:
    result = parse_entries([entry(checks=checks)], "llama", SVC, allow_warning=allow)
    assert result.skipped == ()
    if want is None:
        assert (result.replicas, result.excluded) == ((), 1)
    else:
        assert [r.health for r in result.replicas] == [want]


def test_warning_uses_warning_weight() -> None:
    e = entry(checks=["warning"], weights={"Passing": 10, "Warning": 2})
    assert [r.weight for r in parse_entries([e], "llama", SVC, True).replicas] == [2]


MALFORMED = [
    ("port 0", entry(port=0), "bad_port"),
    ("port too big", entry(port=65536), "bad_port"),
    ("port as string", entry(port="8001"), "bad_port"),
    ("port bool", entry(port=True), "bad_port"),
    ("hostname address", entry(address="replica.example"), "bad_address"),
    ("garbage address", entry(address="10.0.0.300"), "bad_address"),
    ("no address at all", entry(address="", node_address=""), "bad_address"),
    ("missing id", entry(sid=""), "missing_id"),
    ("other service", entry(service="triton-other"), "wrong_service"),
    ("model mismatch", entry(meta={"model": "mistral"}), "model_mismatch"),
    ("weight zero", entry(meta={"weight": "0"}), "bad_weight"),
    ("weight text", entry(meta={"weight": "heavy"}), "bad_weight"),
    ("weights.passing zero", entry(weights={"Passing": 0}), "bad_weight"),
    ("metrics port text", entry(meta={"metrics_port": "x"}), "bad_metrics_port"),
    ("tags not strings", entry(tags=[1]), "bad_tags"),
    ("meta not strings", entry(meta={"zone": 3}), "bad_meta"),
    ("checks not a list", {**entry(), "Checks": "ok"}, "bad_checks"),
    ("entry not an object", "nope", "not_an_object"),
    ("service not an object", {**entry(), "Service": []}, "not_an_object"),
]


@pytest.mark.parametrize(("e", "reason"), [(e, r) for _, e, r in MALFORMED],
                         ids=[i for i, _, _ in MALFORMED])
def test_malformed_entries_are_skipped_not_raised(e: Any, reason: str) -> None:
    result = parse_entries([e, entry("good")], "llama", SVC)
    assert [r.id for r in result.replicas] == ["good"]
    assert [s.reason for s in result.skipped] == [reason]
    assert reason in SKIP_REASONS


def test_duplicate_id_keeps_first_and_skips_rest() -> None:
    result = parse_entries([entry("a"), entry("a", address="10.0.0.2")], "llama", SVC)
    assert [r.address for r in result.replicas] == ["10.0.0.1"]
    assert [(s.service_id, s.reason) for s in result.skipped] == [("a", "duplicate_id")]


def test_dead_duplicate_does_not_hide_live_one() -> None:
    dead, live = entry("a", checks=["critical"]), entry("a", address="10.0.0.2")
    result = parse_entries([dead, live], "llama", SVC)
    assert [r.address for r in result.replicas] == ["10.0.0.2"]
    assert result.skipped == ()


def test_output_sorted_by_id_and_body_must_be_a_list() -> None:
    result = parse_entries([entry("b"), entry("a")], "llama", SVC)
    assert [r.id for r in result.replicas] == ["a", "b"]
    bad = parse_entries({"not": "a list"}, "llama", SVC)
    assert (bad.replicas, [s.reason for s in bad.skipped]) == ((), ["not_an_object"])


def test_idless_entry_key_is_stable_across_positions() -> None:
    raw = ["not", "an", "entry"]
    first = parse_entries([raw], "llama", SVC).skipped[0].service_id
    later = parse_entries([entry("x"), entry("y"), raw], "llama", SVC).skipped[0].service_id
    assert first == later and first.startswith("#")


def on_node(e: dict[str, Any], node: str) -> dict[str, Any]:
    return {**e, "Node": {**e["Node"], "Node": node}}


def test_instances_are_keyed_by_node_and_service_id() -> None:
    """Consul keys instances by (node, service id): one id on two nodes is two replicas."""
    a1, a2 = on_node(entry("a"), "gpu-1"), on_node(entry("a", address="10.0.0.2"), "gpu-2")
    result = parse_entries([a2, a1, on_node(entry("b", address="10.0.0.3"), "gpu-1")],
                           "llama", SVC)
    assert [(r.id, r.address) for r in result.replicas] == [
        ("a@gpu-1", "10.0.0.1"), ("a@gpu-2", "10.0.0.2"), ("b", "10.0.0.3")]
    assert result.skipped == ()


WARNING_ZERO = [
    ("warning with Warning 0: excluded, not malformed", ["warning"], True, [], 1),
    ("passing with Warning 0: passing weight", ["passing"], True, [3], 0),
    ("warning with Warning 0 but not allowed: excluded", ["warning"], False, [], 1),
]


@pytest.mark.parametrize(("checks", "allow", "weights", "excluded"), [c[1:] for c in WARNING_ZERO],
                         ids=[c[0] for c in WARNING_ZERO])
def test_weights_warning_zero_means_no_traffic_while_warning(
    checks: list[str], allow: bool, weights: list[int], excluded: int
) -> None:
    e = entry(checks=checks, weights={"Passing": 3, "Warning": 0})
    result = parse_entries([e], "llama", SVC, allow)
    assert ([r.weight for r in result.replicas], result.skipped, result.excluded) == (
        weights, (), excluded)
