"""Fault injection against the real stack (real ``tritonserver`` replicas, real control
plane, real Envoy; short stream=false requests over ModelStreamInfer through Envoy).
Each scenario lives in ``faults_scenarios`` / ``faults_consul`` and returns a
``FaultOutcome``: requests sent and failed, a recovery time, and every broken promise
in ``violations``.

Bounded: each scenario runs one stack for a few seconds with 3 client threads. The
Consul outage lasts ``CARAVAN_FAULT_OUTAGE_S`` seconds (default 5 for ``make test``)
and the control plane stays down ``CARAVAN_FAULT_CP_DOWN_S`` (default 1);
``benchmarks/reliability.py`` runs this module with 30 s and 3 s and
``CARAVAN_FAULT_RESULTS=DIR``, where every outcome is written as ``<scenario>.json``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from faults_consul import consul_outage
from faults_scenarios import (
    DEAD_ENGINE_LIMIT_S,
    FaultOutcome,
    control_plane_restart,
    dead_engine,
    rejected_push,
    replica_kill,
    scale_in_drain,
)

from caravan.render.envoy import bootstrap

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(180)]

OUTAGE_S = float(os.environ.get("CARAVAN_FAULT_OUTAGE_S", "5"))
CP_DOWN_S = float(os.environ.get("CARAVAN_FAULT_CP_DOWN_S", "1"))
RESULTS = os.environ.get("CARAVAN_FAULT_RESULTS")


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
    started = time.monotonic()
    out = scenario(tmp, **kw)
    print(out.to_json())  # shown with -s, and on failure
    if RESULTS:
        path = Path(RESULTS) / f"{scenario.__name__}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {**out.to_json(), "elapsed_s": round(time.monotonic() - started, 1)}
        path.write_text(json.dumps(data, indent=1, default=str))
    return out


def test_control_plane_kill_restart_zero_failures(tmp_path: Path) -> None:
    out = run(control_plane_restart, tmp_path, down_s=CP_DOWN_S)
    assert out.sent >= 40
    assert out.failed == 0, out.details["requests"]
    assert out.details["down_s"] >= CP_DOWN_S
    assert envoy_has_fast_xds_reconnect()
    assert out.violations == []
    assert out.recovery_s is not None and out.recovery_s <= 1.0


def test_consul_outage_zero_failures_and_fast_convergence(tmp_path: Path) -> None:
    out = run(consul_outage, tmp_path, outage_s=OUTAGE_S)
    assert out.details["failed_consul_queries"] >= 2, "the outage must be noticed"
    assert out.details["requests_during_outage"] >= 20, "traffic must flow during the outage"
    assert out.failed == 0, out.details["requests"]
    assert out.violations == []


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> FaultOutcome:
    return run(replica_kill, tmp_path_factory.mktemp("replica-kill"))


def test_replica_sigkill_short_requests_fail_only_on_the_wire(killed: FaultOutcome) -> None:
    """Short requests in flight on the victim, or sent to it before Envoy ejects it, are
    retried on another replica when no response had started; only one whose answer was on
    the wire at the kill can fail (INTERNAL RST_STREAM from the victim), and few do."""
    assert killed.details["requests_after_kill"] >= 40
    assert killed.details["short_failures_not_on_the_wire"] == 0, killed.details["requests"]
    assert killed.details["short_resets_on_the_wire"] <= max(1, killed.details["requests_after_kill"] // 100)


def test_replica_sigkill_before_first_response_is_retried_elsewhere(killed: FaultOutcome) -> None:
    """A request on the victim that had no response yet (stream=false, still generating,
    so no response headers) completes: Envoy replays it on another replica."""
    waiting = [p for p in killed.details["probes"] if not p["stream"]]
    assert waiting and killed.details["answered_before_kill"] == []
    for p in waiting:
        assert p["outcome"] == "OK" and p["replica"] not in ("", killed.details["victim"]), p
    assert killed.details["envoy_retries"] >= len(waiting)


def test_replica_sigkill_after_first_response_is_reset_at_once(killed: FaultOutcome) -> None:
    """A stream whose replica dies after its first response cannot be retried: Envoy has
    forwarded response headers, so it resets the client's HTTP/2 stream (RST_STREAM
    INTERNAL_ERROR, `upstream_reset_after_response_started`), which grpcio reports as
    INTERNAL "RST_STREAM"; streams on the other replicas complete (see
    docs/reliability.md)."""
    victim = killed.details["victim"]
    streams = [p for p in killed.details["probes"] if p["stream"]]
    on_victim = [p for p in streams if p["first_replica"] == victim]
    others = [p for p in streams if p["first_replica"] != victim]
    assert on_victim and others, streams
    for p in on_victim:
        assert p["outcome"] == "INTERNAL" and "RST_STREAM" in p["message"], p
    assert all(p["outcome"] == "OK" for p in others), others
    assert killed.violations == []


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


def test_dead_engine_leaves_traffic_within_10s(tmp_path: Path) -> None:
    """The engine of one of two replicas dies (its process lives on): within 10 s no new
    request reaches it (supervisor's ModelReady check -> registry -> control plane ->
    Envoy); the requests that failed meanwhile all failed on that replica; restarted in
    place, it serves again."""
    out = run(dead_engine, tmp_path)
    assert out.recovery_s is not None and out.recovery_s <= DEAD_ENGINE_LIMIT_S, out.details
    assert out.details["reached_victim_after_death"] >= 1, "the load must have found the dead engine"
    assert out.details["failed_on_victim"] == out.failed, out.details["failure_messages"]
    assert out.details["requests_after_last_on_victim"] >= 60
    assert out.details["served_by_victim_after_back"] >= 1, "the restarted replica serves again"
    assert out.violations == []
