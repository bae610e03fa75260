"""Consul end to end: fake Consul -> two ``caravan xds --consul`` -> real Envoy -> replicas.

One stack for the module (see ``consul_e2e_stack``): the Consul fake in this process,
two control-plane subprocesses watching it, one real Envoy whose bootstrap lists both,
and three real replicas (``tritonserver``, simulated vLLM engine) of model ``alpha``
(``alpha-0`` and ``alpha-1`` registered; ``alpha-2`` running but registered only by
the tests that need it). Every test leaves the stack as it found it. Traffic is
stream=false requests over ModelStreamInfer through Envoy; which replica served a
request is the ``host:port`` Envoy names in ``x-caravan-upstream``. Every wait polls
with a bounded timeout; every loop is bounded.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from consul_e2e_stack import (
    ConsulFake,
    ControlPlaneProc,
    Traffic,
    envoy_hosts,
    first_served_by,
    make_spec,
    register,
    serving_hosts,
    spread,
    start_control_plane,
    start_replicas,
    wait_ready,
    wait_until,
    write_spec,
)

from caravan.local.launch import Launcher, RunningReplica, http_get
from caravan.local.process import ChildProcess, free_port
from caravan.spec import PlatformSpec

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

MODEL = "alpha"
CLUSTER = f"model-{MODEL}"
ENVOY_NODE = "e2e-consul-envoy"
TYPES = ("cds", "eds", "lds", "rds")
CONVERGE_S = 15.0  # bound on any one convergence wait


@dataclass
class Stack:
    fake: ConsulFake
    spec: PlatformSpec
    spec_path: Path
    launcher: Launcher
    cps: list[ControlPlaneProc]
    envoy: ChildProcess
    replicas: dict[str, RunningReplica]

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.spec.envoy.listen_port}"

    @property
    def admin(self) -> int:
        return self.spec.envoy.admin_port

    def endpoints(self, *ids: str) -> set[str]:
        return {self.replicas[i].endpoint for i in ids}

    def endpoint(self, rid: str) -> str:
        return self.replicas[rid].endpoint

    def wait_serving(self, *ids: str, timeout_s: float = CONVERGE_S) -> None:
        """Until Envoy's cluster holds exactly ``ids``, all of them healthy."""
        want = self.endpoints(*ids)
        wait_until(lambda: set(envoy_hosts(self.admin, CLUSTER)) == want
                   and serving_hosts(self.admin, CLUSTER) == want,
                   timeout_s, f"Envoy serving exactly {sorted(ids)}")

    def envoy_cp(self) -> ControlPlaneProc:
        """The control plane Envoy's ADS stream is connected to."""
        for cp in self.cps:
            if any(c["node_id"] == ENVOY_NODE for c in cp.clients()):
                return cp
        raise AssertionError("Envoy is connected to no control plane")


BASELINE = ("alpha-0", "alpha-1")
SPARE = "alpha-2"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("e2e-consul")
    fake = ConsulFake()
    fake.start()
    spec = make_spec(fake.address, (MODEL,))
    spec_path = write_spec(spec, logs / "spec.yaml")
    try:
        with Launcher(logs) as launcher:
            replicas = start_replicas(launcher, MODEL, [f"alpha-{i}" for i in range(3)])
            cps = [
                start_control_plane(launcher, spec_path, "cp-a", spec.control_plane.xds_port,
                                    spec.control_plane.admin_port),
                start_control_plane(launcher, spec_path, "cp-b", free_port(), free_port()),
            ]
            for rid in BASELINE:
                register(fake, replicas[rid])
            for cp in cps:
                wait_ready(cp)
            envoy = launcher.envoy(spec, [("127.0.0.1", cp.xds_port) for cp in cps], node_id=ENVOY_NODE)
            s = Stack(fake, spec, spec_path, launcher, cps, envoy, replicas)
            s.wait_serving(*BASELINE, timeout_s=30)
            yield s  # a restarted control plane is started by (and stopped with) the launcher
    finally:
        fake.stop()


@pytest.fixture
def spare(stack: Stack) -> Iterator[RunningReplica]:
    """The spare replica; deregistered again (if registered) after the test."""
    yield stack.replicas[SPARE]
    try:
        stack.fake.deregister(SPARE)
    except Exception:  # the fake raises when it is not registered: nothing to undo
        return
    stack.wait_serving(*BASELINE)


def versions(snap: dict[str, Any]) -> dict[str, Any]:
    """Per-type versions and per-resource versions of a /debug/snapshot document."""
    return {t: (snap[t]["version"],
                {n: r["version"] for n, r in snap[t]["resources"].items()}) for t in TYPES}


def eds_endpoints(snap: dict[str, Any]) -> set[str]:
    """"host:port" of every endpoint in model-alpha's ClusterLoadAssignment."""
    cla = snap["eds"]["resources"][CLUSTER]["resource"]
    out = set()
    for group in cla.get("endpoints", []):
        for lb in group.get("lbEndpoints", []):
            sock = lb["endpoint"]["address"]["socketAddress"]
            out.add(f"{sock['address']}:{sock['portValue']}")
    return out


# ------------------------------------------------------------------------------- tests


def test_baseline_traffic_reaches_only_registered_replicas(stack: Stack) -> None:
    served = spread(stack.url, MODEL, 24, "baseline")
    assert set(served) == stack.endpoints(*BASELINE), served


def test_registered_replica_starts_receiving_traffic(stack: Stack, spare: RunningReplica) -> None:
    register(stack.fake, spare)
    stack.wait_serving(*BASELINE, SPARE)
    sent = first_served_by(stack.url, MODEL, spare.endpoint, 60, "added")
    assert 1 <= sent <= 60


def test_deregistered_replica_stops_receiving_traffic(stack: Stack, spare: RunningReplica) -> None:
    register(stack.fake, spare)
    stack.wait_serving(*BASELINE, SPARE)
    first_served_by(stack.url, MODEL, spare.endpoint, 60, "before-removal")
    stack.fake.deregister(SPARE)
    stack.wait_serving(*BASELINE)
    served = spread(stack.url, MODEL, 30, "after-removal")
    assert spare.endpoint not in served
    assert set(served) == stack.endpoints(*BASELINE), served


def test_maintenance_mode_drains_replica(stack: Stack) -> None:
    victim, other = BASELINE[1], BASELINE[0]
    stack.fake.maintenance(victim, True, "e2e drain")
    try:
        wait_until(lambda: "eds_status_draining" in envoy_hosts(stack.admin, CLUSTER).get(
            stack.replicas[victim].endpoint, ""), CONVERGE_S, f"{victim} DRAINING in Envoy")
        served = spread(stack.url, MODEL, 30, "during-drain")
        assert served == {stack.endpoint(other): 30}, served
    finally:
        stack.fake.maintenance(victim, False)
    stack.wait_serving(*BASELINE)
    assert first_served_by(stack.url, MODEL, stack.endpoint(victim), 60, "after-drain") >= 1


def test_consul_outage_keeps_serving_and_later_change_converges(
    stack: Stack, spare: RunningReplica
) -> None:
    before = [versions(cp.snapshot()) for cp in stack.cps]
    errors_before = [cp.metric("caravan_discovery_errors_total") for cp in stack.cps]
    traffic = Traffic(stack.url, MODEL, max_requests=3000, max_s=40).start()
    try:
        wait_until(lambda: traffic.total() >= 10, CONVERGE_S, "traffic before the outage")
        stack.fake.stop()
        at_stop = traffic.total()
        # Both control planes noticed (two failed queries each) while traffic kept flowing.
        wait_until(lambda: all(cp.metric("caravan_discovery_errors_total") >= e + 2
                               for cp, e in zip(stack.cps, errors_before, strict=True))
                   and traffic.total() >= at_stop + 20, CONVERGE_S, "outage noticed by both")
        for cp, snap in zip(stack.cps, before, strict=True):
            assert cp.ready(), f"{cp.name} must stay ready without Consul"
            assert versions(cp.snapshot()) == snap, f"{cp.name} must keep its last snapshot"
        during = traffic.total() - at_stop
        stack.fake.start()  # same port, state kept
        register(stack.fake, spare)
        stack.wait_serving(*BASELINE, SPARE)  # refused connections: retried within 0.5 s
        first_served_by(stack.url, MODEL, spare.endpoint, 60, "after-restart")
    finally:
        served, failed = traffic.stop()
    assert failed == [], failed[:5]
    assert during >= 20
    assert set(served) >= stack.endpoints(*BASELINE), served


def test_leader_loss_keeps_serving_and_a_change_after_it_converges(
    stack: Stack, spare: RunningReplica
) -> None:
    """Consul's servers lose their leader (agent up, queries held 2 s then 500 "No cluster
    leader"): Envoy keeps serving; once a leader is back a new replica reaches Envoy."""
    before = [cp.metric("caravan_discovery_failures_total") for cp in stack.cps]
    traffic = Traffic(stack.url, MODEL, max_requests=3000, max_s=40).start()
    try:
        wait_until(lambda: traffic.total() >= 10, CONVERGE_S, "traffic before the leader loss")
        stack.fake.lose_leader(hold_s=2.0)
        wait_until(lambda: all(cp.metric("caravan_discovery_failures_total") >= b + 1
                               for cp, b in zip(stack.cps, before, strict=True)),
                   CONVERGE_S, "leader loss counted by both control planes")
        assert all(cp.ready() for cp in stack.cps)
        stack.fake.regain_leader()
        register(stack.fake, spare)
        stack.wait_serving(*BASELINE, SPARE)
        first_served_by(stack.url, MODEL, spare.endpoint, 60, "after-leader-loss")
    finally:
        stack.fake.regain_leader()
        served, failed = traffic.stop()
    assert failed == [], failed[:5]
    assert set(served) >= stack.endpoints(*BASELINE), served


def test_a_policy_edit_that_hides_every_replica_never_empties_the_cluster(stack: Stack) -> None:
    """ACLs switched to default deny at run time while the control planes send no token:
    Consul answers 200 [] (the filtered flag is hidden from the empty token). Discovery
    counts acl_empty, /readyz says so, Envoy keeps both replicas, no request fails."""
    traffic = Traffic(stack.url, MODEL, max_requests=3000, max_s=40).start()
    try:
        wait_until(lambda: traffic.total() >= 10, CONVERGE_S, "traffic before the edit")
        stack.fake.acl_default_policy = "deny"
        stack.fake.register(f"triton-{MODEL}", "wake", port=1, address="127.0.0.1",
                            check_status="critical")  # wakes the blocked queries at once
        wait_until(lambda: all("acl_empty" in get_readyz(cp) for cp in stack.cps),
                   CONVERGE_S, "acl_empty on both /readyz")
        wait_until(lambda: traffic.total() >= 30, CONVERGE_S, "traffic during the edit")
        assert set(envoy_hosts(stack.admin, CLUSTER)) == stack.endpoints(*BASELINE)
    finally:
        stack.fake.acl_default_policy = None
        stack.fake.deregister("wake")
        served, failed = traffic.stop()
    wait_until(lambda: all("discovery:" not in get_readyz(cp) for cp in stack.cps),
               CONVERGE_S, "discovery healthy again")
    assert failed == [], failed[:5]
    assert set(served) == stack.endpoints(*BASELINE), served


def get_readyz(cp: ControlPlaneProc) -> str:
    return http_get(cp.admin_port, "/readyz")[1]


def test_two_control_planes_publish_identical_versions(stack: Stack, spare: RunningReplica) -> None:
    base = stack.endpoints(*BASELINE)
    wait_until(lambda: all(eds_endpoints(cp.snapshot()) == base for cp in stack.cps),
               CONVERGE_S, "both control planes at the baseline")
    baseline_versions = [versions(cp.snapshot()) for cp in stack.cps]
    assert baseline_versions[0] == baseline_versions[1]

    register(stack.fake, spare)
    grown = base | {spare.endpoint}
    wait_until(lambda: all(eds_endpoints(cp.snapshot()) == grown for cp in stack.cps),
               CONVERGE_S, "both control planes see the spare")
    grown_versions = [versions(cp.snapshot()) for cp in stack.cps]
    assert grown_versions[0] == grown_versions[1]
    assert grown_versions[0]["eds"] != baseline_versions[0]["eds"]
    assert grown_versions[0]["cds"] == baseline_versions[0]["cds"], "only EDS may change"
    # Envoy ACKed exactly that version from whichever instance it talks to.
    eds_version = grown_versions[0]["eds"][0]
    wait_until(lambda: any(c["node_id"] == ENVOY_NODE and c["acked_versions"].get("eds")
                           == eds_version for c in stack.envoy_cp().clients()),
               CONVERGE_S, "Envoy's ACK of the new EDS version")

    stack.fake.deregister(SPARE)
    wait_until(lambda: all(eds_endpoints(cp.snapshot()) == base for cp in stack.cps),
               CONVERGE_S, "both control planes back at the baseline")
    back = [versions(cp.snapshot()) for cp in stack.cps]
    assert back[0] == back[1] == baseline_versions[0], "same state must give the same versions"


def test_envoy_fails_over_when_its_control_plane_is_killed(
    stack: Stack, spare: RunningReplica
) -> None:
    victim = stack.envoy_cp()
    survivor = next(cp for cp in stack.cps if cp is not victim)
    traffic = Traffic(stack.url, MODEL, max_requests=3000, max_s=40).start()
    try:
        wait_until(lambda: traffic.total() >= 10, CONVERGE_S, "traffic before the kill")
        victim.proc.signal(signal.SIGKILL)
        wait_until(lambda: not victim.proc.alive(), 5, f"{victim.name} gone")
        register(stack.fake, spare)
        stack.wait_serving(*BASELINE, SPARE, timeout_s=30)  # only the survivor can push it
        eds_version = survivor.snapshot()["eds"]["version"]
        wait_until(lambda: any(c["node_id"] == ENVOY_NODE and c["acked_versions"].get("eds")
                               == eds_version for c in survivor.clients()),
                   CONVERGE_S, f"Envoy's ACK at {survivor.name}")
        first_served_by(stack.url, MODEL, spare.endpoint, 60, "after-failover")
    finally:
        served, failed = traffic.stop()
        _restart(stack, victim)
    assert failed == [], failed[:5]
    assert set(served) >= stack.endpoints(*BASELINE), served


def _restart(stack: Stack, cp: ControlPlaneProc) -> None:
    """Bring a killed control plane back on its ports (keeps the fixture's invariant)."""
    cp.proc.stop()
    fresh = start_control_plane(stack.launcher, stack.spec_path, cp.name, cp.xds_port, cp.admin_port)
    stack.cps[stack.cps.index(cp)] = fresh
    wait_ready(fresh)
