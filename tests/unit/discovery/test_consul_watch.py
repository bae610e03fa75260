"""The pure parts of discovery's datacenter-wide watches (``caravan.discovery.consul_watch``):
the watches, their go-bexpr filters and the per-service digests of a checks answer."""

from __future__ import annotations

from typing import Any

from caravan.discovery.consul_watch import (
    CHECKS,
    NODES,
    SERVICES,
    bexpr_string,
    check_fingerprints,
    entry_nodes,
    service_filter,
    watch_specs,
)


def check(node: str, cid: str, service: str = "", status: str = "passing",
          modify: int = 10) -> dict[str, Any]:
    return {"Node": node, "CheckID": cid, "ServiceName": service,
            "ServiceID": f"{service}-id" if service else "", "Status": status,
            "ModifyIndex": modify}


def test_three_watches_cover_checks_services_and_nodes() -> None:
    specs = watch_specs(["triton-b", "triton-a"])
    assert [(s.name, s.path, s.per_model) for s in specs] == [
        (CHECKS, "/v1/health/state/any", True), (SERVICES, "/v1/catalog/services", False),
        (NODES, "/v1/catalog/nodes", False)]
    assert dict(specs[0].params)["filter"] == ('ServiceName == "" or ServiceName == "triton-a" '
                                               'or ServiceName == "triton-b"')
    assert dict(specs[1].params)["filter"] == ('ServiceName == "triton-a" or '
                                               'ServiceName == "triton-b"')


def test_bexpr_strings_are_escaped() -> None:
    assert bexpr_string('a"b\\c') == '"a\\"b\\\\c"'
    assert service_filter(['x"y']) == 'ServiceName == "x\\"y"'


def test_a_digest_covers_own_checks_and_the_node_checks_of_its_nodes() -> None:
    body = [check("n1", "serfHealth"), check("n2", "serfHealth"),
            check("n1", "service:a", "triton-a"), check("n3", "service:b", "triton-b")]
    nodes = {"triton-a": frozenset({"n1"}), "triton-b": frozenset({"n3"})}
    before = check_fingerprints(body, nodes)
    assert before is not None
    flipped = [*body[:1], check("n2", "serfHealth", status="critical", modify=11), *body[2:]]
    assert check_fingerprints(flipped, nodes) == before, "n2 hosts neither service"
    on_n1 = [check("n1", "serfHealth", status="critical", modify=12), *body[1:]]
    after = check_fingerprints(on_n1, nodes)
    assert after is not None
    assert after["triton-a"] != before["triton-a"] and after["triton-b"] == before["triton-b"]


def test_a_check_that_flipped_back_still_differs() -> None:
    nodes = {"triton-a": frozenset({"n1"})}
    first = check_fingerprints([check("n1", "service:a", "triton-a", modify=10)], nodes)
    back = check_fingerprints([check("n1", "service:a", "triton-a", modify=14)], nodes)
    assert first != back


def test_malformed_bodies_give_no_digest() -> None:
    assert check_fingerprints({"not": "a list"}, {"s": frozenset()}) is None
    assert check_fingerprints(["x"], {"s": frozenset()}) is None


def test_entry_nodes() -> None:
    body = [{"Node": {"Node": "n1"}}, {"Node": {"Node": "n2"}}, {"Node": "bad"}, "junk"]
    assert entry_nodes(body) == frozenset({"n1", "n2"})
    assert entry_nodes(None) == frozenset()
