"""The Consul fake behaves as Consul's source says (checked with py-consul and raw HTTP),
failure modes included, so contract tests of ``ConsulReplicaSource`` against it mean
something. Each behaviour cites the Consul function it follows (the fake's docstring has
the full list): ACL filtering and its flag, the default-policy header, token precedence,
leader loss with the agent's hold, stale reads, go-connlimit's 429, ``?dc``, node checks
and node maintenance, indexes of unknown services, the JSON shape, weight validation."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import consul
import pytest
import requests
from tests.fakes.consul import ConsulFake
from tests.fakes.consul.query import parse_duration

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


# ------------------------------------------------------------------------------------------
# Failure modes, from Consul's source (see the fake's docstring for the functions followed)

def get(f: ConsulFake, path: str, header_token: str | None = None,
        headers: dict[str, str] | None = None, **params: str) -> requests.Response:
    hdrs = {**({"X-Consul-Token": header_token} if header_token else {}), **(headers or {})}
    return requests.get(f"{f.base_url}{path}", params=params, headers=hdrs, timeout=15)


def health(f: ConsulFake, token: str | None = None, **params: str) -> requests.Response:
    return get(f, f"/v1/health/service/{SVC}", token, **params)


@pytest.fixture
def acl() -> Iterator[ConsulFake]:
    with ConsulFake(acl_default_policy="deny") as f:
        f.register(SVC, "a", node="gpu-1")
        f.register(SVC, "b", node="gpu-2")
        f.register("other", "o", node="gpu-1")
        yield f


ACL_CASES = [
    ("full read", 'service_prefix "triton-" { policy = "read" }\nnode_prefix "" { policy = "read" }',
     ["a", "b"], False),
    ("no node read: everything filtered", 'service_prefix "triton-" { policy = "read" }', [], True),
    ("no service read: everything filtered", 'node_prefix "" { policy = "read" }', [], True),
    ("one node readable", 'service_prefix "" { policy = "read" }\nnode "gpu-2" { policy = "read" }',
     ["b"], True),
    ("exact deny beats prefix read",
     'service_prefix "" { policy = "read" }\nnode_prefix "gpu-" { policy = "read" }\n'
     'node "gpu-1" { policy = "deny" }', ["b"], True),
    ("longest prefix wins",
     'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "deny" }\n'
     'node_prefix "gpu" { policy = "read" }', ["a", "b"], False),
    ("write implies read", 'service_prefix "" { policy = "write" }\nnode_prefix "" { policy = "write" }',
     ["a", "b"], False),
]


@pytest.mark.parametrize(("rules", "ids", "flag"), [c[1:] for c in ACL_CASES],
                         ids=[c[0] for c in ACL_CASES])
def test_acl_filtering_is_a_200_with_a_flag_for_a_token(
    acl: ConsulFake, rules: str, ids: list[str], flag: bool
) -> None:
    """``filterCheckServiceNodes``: node:read and service:read, per entry; never a 403."""
    acl.set_token("t", rules)
    r = health(acl, "t")
    assert r.status_code == 200 and [e["Service"]["ID"] for e in r.json()] == ids
    assert ("X-Consul-Results-Filtered-By-ACLs" in r.headers) is flag
    assert r.headers["X-Consul-Default-ACL-Policy"] == "deny"


def test_the_filtered_flag_is_hidden_from_an_empty_token_but_not_the_agent_token(
    acl: ConsulFake,
) -> None:
    """``maskResultsFilteredByACLs`` masks on the token after ``parseTokenWithDefault``."""
    anon = health(acl)
    assert anon.json() == [] and "X-Consul-Results-Filtered-By-ACLs" not in anon.headers
    acl.set_token("agent-default", 'node_prefix "" { policy = "read" }')
    acl.agent_token = "agent-default"
    r = health(acl)
    assert r.json() == [] and r.headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
    acl.set_anonymous_policy('service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }')
    acl.agent_token = None
    assert len(health(acl).json()) == 2


def test_token_precedence_and_unknown_tokens(acl: ConsulFake) -> None:
    """``parseTokenInternal``: ?token, then X-Consul-Token, then Authorization: Bearer."""
    acl.set_token("good", 'service_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }')
    assert len(get(acl, f"/v1/health/service/{SVC}", "bad", token="good").json()) == 2
    assert len(health(acl, "good").json()) == 2
    bearer = get(acl, f"/v1/health/service/{SVC}", headers={"Authorization": "Bearer good"})
    assert len(bearer.json()) == 2
    both = get(acl, f"/v1/health/service/{SVC}", "bad", headers={"Authorization": "Bearer good"})
    assert (both.status_code, both.text) == (403, "ACL not found")
    assert both.headers["X-Consul-Default-ACL-Policy"] == "deny"
    assert "X-Consul-Index" not in both.headers, "an error answer carries no query meta"


def test_writes_need_write_permission(acl: ConsulFake) -> None:
    acl.set_token("reader", 'service_prefix "" { policy = "read" }')
    c = client(acl, "reader")
    with pytest.raises(consul.ACLPermissionDenied, match="lacks permission 'service:write'"):
        c.agent.service.register(SVC, service_id="z", port=1)
    acl.set_token("writer", 'service_prefix "triton-" { policy = "write" }')
    client(acl, "writer").agent.service.register(SVC, service_id="z", port=1)


def test_default_policy_header_is_allow_with_acls_off(fake: ConsulFake) -> None:
    """Consul's default config has ``acl_default_policy = "allow"``; the header is set by
    ``wrap`` on every answer, errors included."""
    assert health(fake).headers["X-Consul-Default-ACL-Policy"] == "allow"
    assert health(fake, index="x").headers["X-Consul-Default-ACL-Policy"] == "allow"


def test_headers_use_go_canonical_names(fake: ConsulFake) -> None:
    raw = {k for k in health(fake).raw.headers}
    assert {"X-Consul-Knownleader", "X-Consul-Lastcontact", "X-Consul-Default-Acl-Policy",
            "X-Consul-Index"} <= raw


LEADER_CASES = [("no leader", "lose_leader", "No cluster leader"),
                ("no known servers", "lose_servers", "No known Consul servers")]


@pytest.mark.parametrize(("how", "text"), [c[1:] for c in LEADER_CASES],
                         ids=[c[0] for c in LEADER_CASES])
def test_leaderless_answers_500_without_query_meta(fake: ConsulFake, how: str, text: str) -> None:
    getattr(fake, how)()
    r = health(fake)
    assert (r.status_code, r.text) == (500, text)
    assert "X-Consul-Index" not in r.headers and "X-Consul-KnownLeader" not in r.headers
    assert r.headers["X-Consul-Default-ACL-Policy"] == "allow"
    fake.regain_leader()
    assert health(fake).status_code == 200


def test_the_agent_holds_a_leaderless_query_and_answers_if_a_leader_returns(
    fake: ConsulFake,
) -> None:
    """``canRetry``: no-leader errors are retried for ``rpc_hold_timeout``."""
    fake.lose_leader(hold_s=0.6)
    t0 = time.monotonic()
    assert health(fake).status_code == 500 and time.monotonic() - t0 >= 0.6
    threading.Timer(0.3, fake.regain_leader).start()
    t0 = time.monotonic()
    r = health(fake)
    assert r.status_code == 200 and 0.25 <= time.monotonic() - t0 < 0.6


def test_a_blocked_query_fails_when_the_leader_is_lost(fake: ConsulFake) -> None:
    fake.register(SVC, "a")
    index = health(fake).headers["X-Consul-Index"]
    threading.Timer(0.3, fake.lose_leader).start()
    t0 = time.monotonic()
    r = health(fake, index=index, wait="10s")
    assert r.status_code == 500 and time.monotonic() - t0 < 5
    fake.regain_leader()


def test_stale_reads_are_served_by_a_follower_without_a_leader(fake: ConsulFake) -> None:
    fake.register(SVC, "a")
    fake.lose_leader()
    time.sleep(0.05)
    r = health(fake, stale="")
    assert r.status_code == 200 and len(r.json()) == 1
    assert r.headers["X-Consul-KnownLeader"] == "false"
    assert int(r.headers["X-Consul-LastContact"]) >= 40
    assert r.headers["X-Consul-Effective-Consistency"] == "stale"
    fake.lose_servers()
    assert health(fake, stale="").status_code == 500


def test_too_many_connections_get_go_connlimits_raw_429(fake: ConsulFake) -> None:
    import socket

    fake.max_conns_per_client = 2
    held = [socket.create_connection(("127.0.0.1", fake.port)) for _ in range(2)]
    try:
        time.sleep(0.1)
        assert fake.open_connections() == 2
        extra = socket.create_connection(("127.0.0.1", fake.port))
        reply = extra.recv(4096).decode()
        extra.close()
        assert reply.startswith("HTTP/1.1 429 Too Many Requests\r\n")
        assert "Connection: close" in reply
        assert reply.endswith("Your IP is issuing too many concurrent connections, "
                              "please rate limit your calls\n")
    finally:
        for s in held:
            s.close()
    time.sleep(0.1)
    assert health(fake).status_code == 200


def test_an_unknown_datacenter_is_a_500(fake: ConsulFake) -> None:
    assert health(fake, dc="dc1").status_code == 200
    r = health(fake, dc="mars")
    assert (r.status_code, r.text) == (500, "No path to datacenter")


def test_node_checks_and_node_maintenance(fake: ConsulFake) -> None:
    """Node-level checks are in every entry of the node and bump its services' indexes
    (``updateAllServiceIndexesOfNode``)."""
    fake.register(SVC, "a")
    index = health(fake).headers["X-Consul-Index"]
    threading.Timer(0.2, lambda: fake.node_check("node-1", "critical")).start()
    r = health(fake, index=index, wait="10s")
    assert int(r.headers["X-Consul-Index"]) > int(index)
    serf = next(c for c in r.json()[0]["Checks"] if c["CheckID"] == "serfHealth")
    assert (serf["Status"], serf["ServiceID"]) == ("critical", "")
    assert health(fake, passing="").json() == []
    fake.node_check("node-1", "passing")
    client(fake).agent.maintenance("true", "kernel upgrade")
    maint = next(c for c in health(fake).json()[0]["Checks"] if c["CheckID"] == "_node_maintenance")
    assert (maint["Status"], maint["Notes"], maint["Name"]) == (
        "critical", "kernel upgrade", "Node Maintenance Mode")
    client(fake).agent.maintenance("false")
    assert len(health(fake, passing="1").json()) == 1


def test_index_of_an_unknown_service(fake: ConsulFake) -> None:
    """``maxIndexAndWatchChForService``: the catalog's max index until a service goes
    extinct, then the last extinction index; registering it wakes a blocked query."""
    unknown = get(fake, "/v1/health/service/nope")
    assert unknown.json() == [] and int(unknown.headers["X-Consul-Index"]) == fake.service_index(SVC)
    fake.register("gone", "g")
    fake.deregister("g")
    extinct = int(get(fake, "/v1/health/service/nope").headers["X-Consul-Index"])
    fake.register(SVC, "later")
    assert int(get(fake, "/v1/health/service/nope").headers["X-Consul-Index"]) == extinct
    threading.Timer(0.2, lambda: fake.register("nope", "n")).start()
    t0 = time.monotonic()
    woke = get(fake, "/v1/health/service/nope", index=str(extinct), wait="10s")
    assert len(woke.json()) == 1 and time.monotonic() - t0 < 5


def test_json_shape_port_omitted_when_zero(fake: ConsulFake) -> None:
    fake.register(SVC, "a")
    fake.register("noport", "np", port=0)
    (entry,) = get(fake, "/v1/health/service/noport").json()
    assert "Port" not in entry["Service"] and entry["Service"]["Tags"] == []
    (entry,) = health(fake).json()
    assert entry["Service"]["Port"] == 8001


WEIGHT_CASES = [
    ("warning 0 is valid", {"Passing": 3, "Warning": 0}, 200),
    ("passing 0", {"Passing": 0, "Warning": 1}, 400),
    ("negative warning", {"Passing": 1, "Warning": -1}, 400),
    ("too big", {"Passing": 70000, "Warning": 1}, 400),
]


@pytest.mark.parametrize(("weights", "code"), [c[1:] for c in WEIGHT_CASES],
                         ids=[c[0] for c in WEIGHT_CASES])
def test_weights_are_validated_like_consul(fake: ConsulFake, weights: dict[str, int],
                                           code: int) -> None:
    r = requests.put(f"{fake.base_url}/v1/agent/service/register", timeout=5,
                     json={"Name": SVC, "ID": "w", "Port": 1, "Weights": weights})
    assert r.status_code == code, r.text


PASSING_CASES = [("TRUE", 200), ("t", 200), ("False", 200), ("yes", 400), ("tRuE", 400)]


@pytest.mark.parametrize(("value", "code"), PASSING_CASES, ids=[c[0] for c in PASSING_CASES])
def test_passing_is_parsed_like_go_parsebool(fake: ConsulFake, value: str, code: int) -> None:
    r = health(fake, passing=value)
    assert r.status_code == code
    if code == 400:
        assert r.text == "Invalid value for ?passing"


def test_same_service_id_on_two_nodes_is_two_instances(fake: ConsulFake) -> None:
    fake.register(SVC, "a")
    fake.register(SVC, "a", node="gpu-9", node_address="10.9.9.9")
    assert sorted((e["Node"]["Node"], e["Service"]["ID"]) for e in health(fake).json()) == [
        ("gpu-9", "a"), ("node-1", "a")]
    fake.deregister("a", node="gpu-9")
    assert len(health(fake).json()) == 1
