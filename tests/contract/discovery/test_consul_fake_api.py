"""The Consul fake follows the documented HTTP API (checked with py-consul and raw HTTP),
so contract tests of ``ConsulReplicaSource`` against it mean something."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import consul
import pytest
import requests
from tests.fakes.consul import ConsulFake, parse_duration

SVC = "triton-llama"


@pytest.fixture
def fake() -> Iterator[ConsulFake]:
    with ConsulFake() as f:
        yield f


def client(f: ConsulFake, token: str | None = None) -> consul.Consul:
    c = consul.Consul(host="127.0.0.1", port=f.port, token=token, connections_timeout=5)
    c.token = token
    return c


def test_register_via_api_then_deregister(fake: ConsulFake) -> None:
    c = client(fake)
    c.agent.service.register(SVC, service_id="a", address="10.0.0.1", port=8001,
                             tags=["v1"], meta={"zone": "z1"},
                             check={"TTL": "10s", "Status": "passing"})
    _, nodes = c.health.service(SVC)
    (e,) = nodes
    assert e["Service"] == {**e["Service"], "ID": "a", "Service": SVC, "Address": "10.0.0.1",
                            "Port": 8001, "Tags": ["v1"], "Meta": {"zone": "z1"},
                            "Weights": {"Passing": 1, "Warning": 1}}
    assert e["Node"]["Address"] == "127.0.0.1" and e["Node"]["Datacenter"] == "dc1"
    assert [ch["CheckID"] for ch in e["Checks"]] == ["serfHealth", "service:a"]
    c.agent.service.deregister("a")
    assert c.health.service(SVC)[1] == []
    assert c.agent.service.deregister("a") is False  # py-consul maps the 404 to False
    assert fake.requests[-1].path == "/v1/agent/service/deregister/a"


def test_register_check_defaults_to_critical(fake: ConsulFake) -> None:
    c = client(fake)
    c.agent.service.register(SVC, service_id="a", port=1, check={"TTL": "10s"})
    assert [ch["Status"] for ch in c.health.service(SVC)[1][0]["Checks"]] == ["passing", "critical"]
    c.agent.check.ttl_pass("service:a")
    assert c.health.service(SVC, passing=True)[1] != []


@pytest.mark.parametrize(("query", "ids"), [("passing", ["a"]), ("passing=1", ["a"]),
                                            ("passing=false", ["a", "b", "c"]),
                                            ("", ["a", "b", "c"])],
                         ids=["bare-flag", "one", "false", "absent"])
def test_passing_filter(fake: ConsulFake, query: str, ids: list[str]) -> None:
    fake.register(SVC, "a")
    fake.register(SVC, "b", check_status="warning")
    fake.register(SVC, "c", check_status="critical")
    body = requests.get(f"{fake.base_url}/v1/health/service/{SVC}?{query}", timeout=5).json()
    assert [e["Service"]["ID"] for e in body] == ids


def test_blocking_query_returns_on_change_or_wait(fake: ConsulFake) -> None:
    c = client(fake)
    fake.register(SVC, "a")
    index, _ = c.health.service(SVC)
    t0 = time.monotonic()
    same, _ = c.health.service(SVC, index=index, wait="200ms")
    assert same == index and time.monotonic() - t0 >= 0.2
    timer = threading.Timer(0.1, lambda: fake.register(SVC, "b"))
    timer.start()
    newer, nodes = c.health.service(SVC, index=index, wait="10s")
    timer.join()
    assert int(newer) > int(index) and len(nodes) == 2
    assert time.monotonic() - t0 < 5  # woke on the change, not after the 10 s wait


def test_headers_and_bad_params(fake: ConsulFake) -> None:
    r = requests.get(f"{fake.base_url}/v1/health/service/{SVC}", timeout=5)
    assert r.headers["X-Consul-KnownLeader"] == "true" and "X-Consul-LastContact" in r.headers
    assert int(r.headers["X-Consul-Index"]) >= 1
    bad = requests.get(f"{fake.base_url}/v1/health/service/{SVC}?index=1&wait=soon", timeout=5)
    assert (bad.status_code, bad.text) == (400, "Invalid wait time")
    bad = requests.get(f"{fake.base_url}/v1/health/service/{SVC}?index=x", timeout=5)
    assert (bad.status_code, bad.text) == (400, "Invalid index")


@pytest.mark.parametrize(("text", "seconds"), [("10s", 10), ("100ms", 0.1), ("1m30s", 90),
                                               ("5m", 300)], ids=["s", "ms", "compound", "m"])
def test_duration_syntax(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_maintenance_is_a_critical_check(fake: ConsulFake) -> None:
    c = client(fake)
    fake.register(SVC, "a")
    c.agent.service.maintenance("a", "true", reason="upgrade")
    checks = {ch["CheckID"]: ch for ch in c.health.service(SVC)[1][0]["Checks"]}
    maint = checks["_service_maintenance:a"]
    assert (maint["Status"], maint["Notes"], maint["ServiceID"]) == ("critical", "upgrade", "a")
    assert c.health.service(SVC, passing=True)[1] == []
    c.agent.service.maintenance("a", "false")
    assert len(c.health.service(SVC, passing=True)[1]) == 1


def test_acl(fake: ConsulFake) -> None:
    fake.stop()
    with ConsulFake(token="s3cret") as f:
        f.register(SVC, "a")
        assert len(client(f, "s3cret").health.service(SVC)[1]) == 1
        with pytest.raises(consul.ACLPermissionDenied, match="ACL not found"):
            client(f, "wrong").health.service(SVC)
        anon = requests.get(f"{f.base_url}/v1/health/service/{SVC}", timeout=5)
        # maskResultsFilteredByACLs: an empty token never learns that results were filtered
        assert anon.json() == [] and "X-Consul-Results-Filtered-By-ACLs" not in anon.headers
        assert anon.headers["X-Consul-Default-ACL-Policy"] == "deny"
        with pytest.raises(consul.ACLPermissionDenied, match="Permission denied"):
            client(f).agent.service.deregister("a")
        by_query = requests.get(f"{f.base_url}/v1/health/service/{SVC}?token=s3cret", timeout=5)
        assert len(by_query.json()) == 1
        assert {r.token for r in f.requests} == {"s3cret", "wrong", None}


def test_stop_refuses_and_drops_blocked_queries_restart_keeps_state(fake: ConsulFake) -> None:
    c = client(fake)
    fake.register(SVC, "a")
    index, _ = c.health.service(SVC)
    errors: list[BaseException] = []

    def blocked() -> None:
        try:
            c.health.service(SVC, index=index, wait="30s")
        except Exception as exc:
            errors.append(exc)

    t = threading.Thread(target=blocked)
    t.start()
    time.sleep(0.2)
    fake.stop()
    t.join(10)
    assert not t.is_alive() and isinstance(errors[0], requests.ConnectionError)
    with pytest.raises(requests.ConnectionError):
        c.health.service(SVC)
    port = fake.port
    fake.restart()
    assert fake.port == port and len(c.health.service(SVC)[1]) == 1


def test_reset_index_goes_backwards_and_inject_raw(fake: ConsulFake) -> None:
    c = client(fake)
    fake.register(SVC, "a")
    before, _ = c.health.service(SVC)
    fake.reset_index(2)
    fake.inject_raw(SVC, {"Service": {"ID": "bad", "Port": 0}})
    after, nodes = c.health.service(SVC)
    assert int(after) < int(before)
    assert nodes[-1] == {"Service": {"ID": "bad", "Port": 0}}
