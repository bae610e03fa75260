"""Fault injection against the real stack (real replicas, real control plane, real
Envoy; tritonclient traffic through Envoy). Each scenario lives in
``faults_scenarios`` / ``faults_consul`` and returns a ``FaultOutcome``: requests sent
and failed, a recovery time, and every broken promise in ``violations``.

Bounded: each scenario runs one stack for a few seconds with 3 client threads. The
Consul outage lasts ``CARAVAN_FAULT_OUTAGE_S`` seconds (default 5 for ``make test``);
``benchmarks/reliability.py`` runs the full 30 s. Together these take ~45 s on 2 cores.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from faults_consul import consul_outage
from faults_scenarios import (
    FaultOutcome,
    control_plane_restart,
    rejected_push,
    replica_kill,
    scale_in_drain,
)

from caravan.render.envoy import bootstrap

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(180)]

OUTAGE_S = float(os.environ.get("CARAVAN_FAULT_OUTAGE_S", "5"))


def envoy_has_fast_xds_reconnect() -> bool:
    """Does the rendered bootstrap bound Envoy's ADS reconnect backoff? (Envoy's default
    is 500 ms doubling to 30 s, so a control plane down for a few seconds is found
    again only seconds after it is back.)"""
    from caravan.spec import parse_spec

    spec = parse_spec({"models": [{"name": "m", "engine": {"model": "x"}}]})
    boot = bootstrap(spec, [("127.0.0.1", 18000)])
    grpc = boot["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]
    return "retry_policy" in grpc


def run(scenario: Callable[..., FaultOutcome], tmp: Path, **kw: float) -> FaultOutcome:
    out = scenario(tmp, **kw)
    print(out.to_json())  # shown with -s, and on failure
    return out


def test_control_plane_kill_restart_zero_failures(tmp_path: Path) -> None:
    out = run(control_plane_restart, tmp_path)
    assert out.sent >= 40
    assert out.failed == 0, out.details["unary"]
    assert out.details["down_s"] >= 1.0
    assert envoy_has_fast_xds_reconnect()
    assert out.violations == []
    assert out.recovery_s is not None and out.recovery_s <= 1.0


def test_consul_outage_zero_failures_and_fast_convergence(tmp_path: Path) -> None:
    out = run(consul_outage, tmp_path, outage_s=OUTAGE_S)
    assert out.details["failed_consul_queries"] >= 2, "the outage must be noticed"
    assert out.details["requests_during_outage"] >= 20, "traffic must flow during the outage"
    assert out.failed == 0, out.details["unary"]
    assert out.violations == []


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> FaultOutcome:
    return run(replica_kill, tmp_path_factory.mktemp("replica-kill"))


def test_replica_sigkill_zero_failed_unary(killed: FaultOutcome) -> None:
    assert killed.details["unary_after_kill"] >= 40
    assert killed.failed == 0, killed.details["unary"]


def test_replica_sigkill_fails_only_victim_streams_fast(killed: FaultOutcome) -> None:
    streams = killed.details["streams"]
    victim = killed.details["victim"]
    on_victim = [s for s in streams if s["replica"] == victim]
    others = [s for s in streams if s["replica"] != victim]
    assert on_victim and others, streams
    assert all(s["outcome"] == "OK" for s in others), others
    assert all(s["outcome"] not in ("OK", "HUNG", "PENDING") for s in on_victim), on_victim


def test_replica_sigkill_victim_streams_fail_with_a_transport_status(killed: FaultOutcome) -> None:
    """A stream whose replica dies after its first chunk cannot be retried: Envoy has sent
    response headers, so it resets the downstream HTTP/2 stream (RST_STREAM INTERNAL_ERROR,
    `upstream_reset_after_response_started`), which gRPC clients report as INTERNAL
    "Stream removed"; Envoy cannot turn that into a grpc-status trailer. Before any chunk,
    the client sees UNAVAILABLE. Either way the client learns at once that the stream broke
    (see docs/reliability.md)."""
    victim = killed.details["victim"]
    on_victim = [s for s in killed.details["streams"] if s["replica"] == victim]
    for s in on_victim:
        assert s["outcome"] in ("UNAVAILABLE", "INTERNAL"), s
        if s["outcome"] == "INTERNAL":
            assert "RST_STREAM" in s["message"], s


def test_scale_in_with_draining_zero_failures(tmp_path: Path) -> None:
    out = run(scale_in_drain, tmp_path)
    assert out.sent >= 40
    assert out.violations == []
    assert out.failed == 0


def test_rejected_push_keeps_last_good_config(tmp_path: Path) -> None:
    out = run(rejected_push, tmp_path)
    assert "malformed IP address" in out.details["nack_reason"], out.details
    assert out.violations == []
    assert out.failed == 0
    assert out.details["nacks"] == 1
    assert out.details["eds_pushes_while_parked"] == 0
