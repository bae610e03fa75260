"""The Consul fake's datacenter-wide reads behave as Consul's source says, index semantics
included: discovery's watches (``caravan.discovery.consul_watch``) rely on exactly which
write wakes which blocking query.

- ``/v1/health/state/:state`` (``Health.ChecksInState`` -> ``state/catalog.go``
  ``checksInStateTxn``): the checks table's index; woken by every check write, not by an
  instance registered without checks;
- ``/v1/catalog/services`` (``Catalog.ListServices`` -> ``state.Services``): the services
  table's index; woken by every instance write (a port change included), not by a check;
- ``/v1/catalog/nodes`` (``Catalog.ListNodes`` -> ``state.Nodes``): the nodes table; a node
  write wakes it, an instance write bumps its index (``catalogInsertService``) without
  waking it;
- ``blockingquery.Query``: a snapshot restore (``AbandonCh``) answers a blocked query at
  once; ``?filter`` runs before the ACL filter, so the filtered flag only counts entries
  the filter kept (``ChecksInState`` / ``ListServices``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from tests.fakes.consul import ConsulFake

from caravan.discovery.consul_acl import control_plane_policy
from caravan.discovery.consul_watch import service_filter

SVC = "triton-llama"
CHECKS, SERVICES, NODES = "/v1/health/state/any", "/v1/catalog/services", "/v1/catalog/nodes"


@pytest.fixture
def fake() -> Iterator[ConsulFake]:
    with ConsulFake() as f:
        f.register(SVC, "a", address="10.0.0.1")
        yield f


def get(f: ConsulFake, path: str, token: str | None = None, **params: Any) -> requests.Response:
    headers = {"X-Consul-Token": token} if token else {}
    return requests.get(f.base_url + path, params=params, headers=headers, timeout=10)


def index(r: requests.Response) -> int:
    return int(r.headers["X-Consul-Index"])


def blocked(f: ConsulFake, path: str, change: Any, wait: str = "1s") -> tuple[float, int, int]:
    """Block on ``path`` at its current index, make ``change`` 0.2 s later (in a thread);
    -> (seconds the query took, index before, index after)."""
    import threading

    before = index(get(f, path))
    timer = threading.Timer(0.2, change)
    timer.start()
    t0 = time.monotonic()
    after = index(get(f, path, index=before, wait=wait))
    timer.join()
    return time.monotonic() - t0, before, after


def test_checks_wake_on_a_check_write_with_modify_index(fake: ConsulFake) -> None:
    took, before, after = blocked(fake, CHECKS, lambda: fake.set_check("a", "critical"))
    assert took < 0.8 and after > before
    mine = [c for c in get(fake, CHECKS).json() if c["ServiceID"] == "a"]
    assert [(c["Status"], c["ModifyIndex"]) for c in mine] == [("critical", after)]


def test_checks_not_woken_by_an_instance_without_checks(fake: ConsulFake) -> None:
    took, before, after = blocked(
        fake, CHECKS, lambda: fake.register(SVC, "b", address="10.0.0.2", check_status=None))
    assert took >= 1.0 and after == before


def test_checks_by_state_and_filter(fake: ConsulFake) -> None:
    fake.register("other", "o", check_status="critical")
    critical = get(fake, "/v1/health/state/critical").json()
    assert [c["ServiceID"] for c in critical] == ["o"]
    flt = service_filter([SVC], node_checks=True)
    assert {c["CheckID"] for c in get(fake, CHECKS, filter=flt).json()} == {"serfHealth",
                                                                             "service:a"}
    assert get(fake, "/v1/health/state/bogus").status_code == 400
    assert get(fake, CHECKS, filter="Status == passing").status_code == 400


@pytest.mark.parametrize("change", ["register", "port", "deregister"])
def test_services_wake_on_every_instance_write(fake: ConsulFake, change: str) -> None:
    actions = {"register": lambda: fake.register(SVC, "b", address="10.0.0.2"),
               "port": lambda: fake.register(SVC, "a", address="10.0.0.1", port=9999),
               "deregister": lambda: fake.deregister("a")}
    took, before, after = blocked(fake, SERVICES, actions[change])
    assert took < 0.8 and after > before


def test_services_not_woken_by_a_check(fake: ConsulFake) -> None:
    took, before, after = blocked(fake, SERVICES, lambda: fake.set_check("a", "warning"))
    assert took >= 1.0 and after == before
    assert get(fake, SERVICES).json() == {SVC: []}


def test_nodes_wake_on_a_node_write_only(fake: ConsulFake) -> None:
    took, before, after = blocked(fake, NODES, lambda: fake.set_node_address("node-1", "10.9.9.9"))
    assert took < 0.8 and after > before
    took, before, after = blocked(  # catalogInsertService: the index moves, nothing wakes
        fake, NODES, lambda: fake.register(SVC, "b", address="10.0.0.2"))
    assert took >= 1.0 and after > before
    assert [n["Address"] for n in get(fake, NODES).json()] == ["10.9.9.9"]


def test_a_node_write_moves_its_services_index(fake: ConsulFake) -> None:
    before = fake.service_index(SVC)
    fake.set_node_address("node-1", "10.9.9.9")
    assert fake.service_index(SVC) > before


@pytest.mark.parametrize("path", [CHECKS, SERVICES, NODES])
def test_a_snapshot_restore_answers_blocked_queries_at_once(fake: ConsulFake, path: str) -> None:
    fake.reset_index(500)
    took, before, after = blocked(fake, path, lambda: fake.reset_index(3), wait="5s")
    assert took < 1.0 and before == 500 and after == 3


@pytest.mark.parametrize("path", [CHECKS, SERVICES, NODES])
def test_leader_loss_fails_the_watches_too(fake: ConsulFake, path: str) -> None:
    fake.lose_servers()
    r = get(fake, path)
    assert (r.status_code, r.text) == (500, "No known Consul servers")


def test_filter_runs_before_the_acl_filter() -> None:
    token = "00000000-0000-4000-8000-0000000000aa"
    with ConsulFake(acl_default_policy="deny") as f:
        f.set_token(token, control_plane_policy("triton-"))
        f.register(SVC, "a", address="10.0.0.1")
        f.register("billing", "b", address="10.0.0.2")
        flt = service_filter([SVC], node_checks=True)
        ours = get(f, CHECKS, token, filter=flt)
        assert "X-Consul-Results-Filtered-By-ACLs" not in ours.headers
        everything = get(f, CHECKS, token)
        assert everything.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
        assert ours.json() == everything.json()  # billing's check is hidden either way
        svc = get(f, SERVICES, token, filter=service_filter([SVC]))
        assert svc.json() == {SVC: []} and "X-Consul-Results-Filtered-By-ACLs" not in svc.headers
        assert get(f, SERVICES, token).headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
        f.set_token(token, 'service_prefix "triton-" { policy = "read" }')  # no node:read
        assert get(f, CHECKS, token, filter=flt).headers[
            "X-Consul-Results-Filtered-By-ACLs"] == "true"
        assert get(f, NODES, token).headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
