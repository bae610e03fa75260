"""The fault scenarios, as functions returning a ``FaultOutcome`` (test code, also run
with full durations by ``benchmarks/reliability.py``).

Each scenario starts its own stack under ``tmp`` (real replicas, real control plane,
real Envoy), drives bounded tritonclient traffic through Envoy, injects one fault,
measures requests sent / failed and a recovery time, and stops everything it started.
``FaultOutcome.violations`` lists every broken promise (empty = promise kept); the
tests assert it is empty, the benchmark records it.
"""

from __future__ import annotations

import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from faults_load import StreamProbe, UnaryLoad, summarize
from faults_stack import (
    CLUSTER,
    MODEL,
    ManualStack,
    cp_metric,
    envoy_client,
    envoy_hosts,
    envoy_in_sync,
    envoy_versions,
    http_get,
    infra,
    restart_infra,
    serving_hosts,
    start_local_stack,
    wait_until,
)

RESYNC_LIMIT_S = 1.0


@dataclass
class FaultOutcome:
    scenario: str
    promise: str
    sent: int = 0
    failed: int = 0
    recovery_s: float | None = None
    recovery: str = ""  # what recovery_s measures
    violations: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def add_load(self, results: list[Any]) -> None:
        s = summarize(results)
        self.sent, self.failed = int(s["sent"]), int(s["failed"])  # type: ignore[call-overload]
        self.details["unary"] = s
        if self.failed:
            self.violations.append(f"{self.failed} of {self.sent} unary requests failed: "
                                   f"{s['first_errors']}")


# --------------------------------------------------------------------- control plane


def control_plane_restart(tmp: Path, down_s: float = 1.0) -> FaultOutcome:
    """SIGKILL ``caravan xds`` under load, add a replica while it is down, restart it.
    Promise: zero failed requests; Envoy resyncs (new replica in its cluster, current
    CDS/LDS versions in its /config_dump) within 1 s of the restarted control plane being ready."""
    out = FaultOutcome("control plane SIGKILLed and restarted under load",
                       "0 failed requests; Envoy resyncs <= 1 s after the restart is ready",
                       recovery="restarted control plane ready -> Envoy has the new replica "
                                "and the current CDS/LDS versions")
    stack = start_local_stack(tmp, replicas=2)
    load = UnaryLoad(stack.endpoint, MODEL, workers=3, max_s=60 + down_s).start()
    try:
        load.wait_for(20)
        xds = infra(stack, "xds")
        killed = time.monotonic()
        xds.signal(signal.SIGKILL)
        wait_until(lambda: not xds.alive(), 5, "xds gone")
        stack.scale_to(MODEL, 3)  # a change Envoy can only learn after the restart
        wait_until(lambda: len(stack.replicas(MODEL)) == 3, 30, "third replica registered")
        new = next(r.endpoint for r in stack.replicas(MODEL)
                   if r.endpoint not in envoy_hosts(stack.ports.envoy_admin))
        time.sleep(max(0.0, killed + down_s - time.monotonic()))
        restarted = time.monotonic()
        restart_infra(stack, xds)
        admin = stack.ports.xds_admin
        ready = wait_until(lambda: http_get(admin, "/readyz")[0] == 200, 30, "xds ready again")
        in_cluster = wait_until(lambda: new in envoy_hosts(stack.ports.envoy_admin), 30,
                                "Envoy has the new replica")
        synced = wait_until(lambda: envoy_in_sync(admin, stack.ports.envoy_admin), 30,
                            "Envoy holds the current versions")
        before = load.count()
        load.wait_for(before + 20)
    finally:
        results = load.stop()
        stack.stop()
    out.add_load(results)
    out.recovery_s = round(max(in_cluster, synced) - ready, 3)
    out.details.update(down_s=round(restarted - killed, 3),
                       restart_to_ready_s=round(ready - restarted, 3),
                       ready_to_in_cluster_s=round(in_cluster - ready, 3),
                       ready_to_acked_s=round(synced - ready, 3))
    if out.recovery_s > RESYNC_LIMIT_S:
        out.violations.append(f"Envoy resynced {out.recovery_s} s after the restart (> 1 s)")
    return out


# --------------------------------------------------------------------- replica kill


def replica_kill(tmp: Path, streams: int = 6, after_s: float = 4.0) -> FaultOutcome:
    """SIGKILL one replica (still registered, as in Consul until its check fails) under
    unary load and with streams in flight. Promise: zero failed unary requests (retries,
    outlier ejection, health checks); only the streams on that replica fail, well before
    their deadline, with a transport status: UNAVAILABLE, or INTERNAL "RST_STREAM" once
    response headers were sent (Envoy resets the downstream stream then; it cannot send a
    grpc-status trailer mid-response); the others complete."""
    out = FaultOutcome("replica SIGKILLed under load (stays registered)",
                       "0 failed unary requests; only streams on the victim fail, at once "
                       "(UNAVAILABLE, or INTERNAL RST_STREAM after headers), not a hang",
                       recovery="kill -> Envoy marks the victim unhealthy/ejected")
    stack = ManualStack(tmp, replicas=3, time_scale=0.1).start()
    load = UnaryLoad(stack.endpoint, MODEL, workers=3, max_s=60).start()
    probes: list[StreamProbe] = []
    try:
        load.wait_for(20)
        probes = [StreamProbe(stack.endpoint, MODEL, f"stream-{i}", deadline_s=30).start()
                  for i in range(streams)]
        for p in probes:
            if not p.first_chunk.wait(15):
                raise TimeoutError(f"stream {p.session}: no first chunk in 15 s")
        by_replica = {p.replica for p in probes if p.replica}
        victim = sorted(by_replica)[0]
        victim_ep = stack.registered[victim].endpoint
        killed = time.monotonic()
        stack.procs[victim].signal(signal.SIGKILL)
        for p in probes:
            p.done.wait(35)
        ejected = wait_until(lambda: victim_ep not in serving_hosts(stack.ports.envoy_admin),
                             15, "victim out of Envoy's healthy set")
        time.sleep(max(0.0, killed + after_s - time.monotonic()))
    finally:
        results = load.stop()
        stack.stop()
    out.add_load(results)
    out.recovery_s = round(ejected - killed, 3)
    streams_out = [{"session": p.session, "replica": p.replica, "outcome": p.outcome,
                    "chunks": p.chunks, "message": p.message[:120]} for p in probes]
    out.details.update(victim=victim, streams=streams_out,
                       unary_after_kill=sum(1 for r in results if r.ended > killed))
    for p in probes:
        reset = p.outcome == "INTERNAL" and "RST_STREAM" in p.message
        if p.replica == victim and not (p.outcome == "UNAVAILABLE" or reset):
            out.violations.append(f"stream {p.session} on the victim ended {p.outcome} "
                                  f"(want UNAVAILABLE or an RST_STREAM reset): {p.message[:200]}")
        if p.replica != victim and p.outcome != "OK":
            out.violations.append(f"stream {p.session} on {p.replica} (not the victim) "
                                  f"ended {p.outcome}: {p.message[:200]}")
    return out


# --------------------------------------------------------------------- scale-in


def scale_in_drain(tmp: Path, streams: int = 4) -> FaultOutcome:
    """``LocalStack.scale_to`` 3 -> 1 under unary load with streams in flight.
    Promise: zero failed requests (unary and streams): draining replicas get no new
    requests and finish the ones they have before exiting."""
    out = FaultOutcome("scale-in 3 -> 1 with draining under load",
                       "0 failed requests (unary and in-flight streams)",
                       recovery="scale_to -> drained replicas gone from Envoy")
    stack = start_local_stack(tmp, replicas=3, time_scale=0.05)
    load = UnaryLoad(stack.endpoint, MODEL, workers=3, max_s=60).start()
    probes: list[StreamProbe] = []
    try:
        load.wait_for(20)
        probes = [StreamProbe(stack.endpoint, MODEL, f"drain-{i}", max_tokens=2500,
                              deadline_s=30).start() for i in range(streams)]
        for p in probes:
            p.first_chunk.wait(15)
        keep = {r.endpoint for r in sorted(stack.replicas(MODEL), key=lambda r: r.id)[:1]}
        started = time.monotonic()
        stack.scale_to(MODEL, 1)
        gone = wait_until(lambda: set(envoy_hosts(stack.ports.envoy_admin)) == keep, 30,
                          "drained replicas removed from Envoy")
        for p in probes:
            p.done.wait(35)
        load.wait_for(load.count() + 20)
    finally:
        results = load.stop()
        stack.stop()
    out.add_load(results)
    out.recovery_s = round(gone - started, 3)
    out.details["streams"] = [{"session": p.session, "replica": p.replica,
                               "outcome": p.outcome, "chunks": p.chunks} for p in probes]
    for p in probes:
        if p.outcome != "OK":
            out.violations.append(f"stream {p.session} on {p.replica} ended {p.outcome}: "
                                  f"{p.message[:200]}")
    out.sent += len(probes)
    out.failed += sum(p.outcome != "OK" for p in probes)
    return out


# --------------------------------------------------------------------- rejected push


def rejected_push(tmp: Path, watch_s: float = 2.0) -> FaultOutcome:
    """Publish a replica whose address is a hostname (Envoy rejects it in EDS: "malformed
    IP address"). Promise: Envoy keeps serving the last good endpoints (0 failed
    requests), the NACK is counted in caravan_xds_nacks_total, and the rejected version
    is never resent; the next good change is pushed and applied."""
    out = FaultOutcome("push rejected by Envoy (NACK)",
                       "last good config keeps serving; NACK counted; nothing resent",
                       recovery="good registry change after the NACK -> Envoy serves it")
    stack = ManualStack(tmp, replicas=2).start()
    admin, envoy_admin = stack.ports.xds_admin, stack.ports.envoy_admin
    load = UnaryLoad(stack.endpoint, MODEL, workers=3, max_s=60).start()
    try:
        load.wait_for(20)
        good = list(stack.registered.values())
        good_hosts = {r.endpoint for r in good}
        nacks0 = cp_metric(admin, "caravan_xds_nacks_total", 'type="eds"')
        versions0 = envoy_versions(envoy_admin)
        from dataclasses import replace
        bad = replace(good[0], id=f"{MODEL}-bad", address="replica-bad.invalid", port=9)
        stack.publish([*good, bad])
        wait_until(lambda: cp_metric(admin, "caravan_xds_nacks_total", 'type="eds"') > nacks0,
                   15, "the NACK counted")
        pushes = cp_metric(admin, "caravan_xds_pushes_total", 'type="eds"')
        time.sleep(watch_s)  # nothing may be resent meanwhile
        pushes_after = cp_metric(admin, "caravan_xds_pushes_total", 'type="eds"')
        nacks = cp_metric(admin, "caravan_xds_nacks_total", 'type="eds"') - nacks0
        hosts_during = set(envoy_hosts(envoy_admin))
        client = envoy_client(admin) or {}
        extra = stack.start_replica()
        wait_until(lambda: _serving(extra.endpoint), 30, "extra replica serving")
        fixed = time.monotonic()
        stack.publish([*good, extra])
        applied = wait_until(lambda: serving_hosts(envoy_admin) == good_hosts | {extra.endpoint},
                             15, "the good change applied")
        load.wait_for(load.count() + 20)
    finally:
        results = load.stop()
        stack.stop()
    out.add_load(results)
    out.recovery_s = round(applied - fixed, 3)
    out.details.update(nacks=nacks, eds_pushes_while_parked=pushes_after - pushes,
                       hosts_while_parked=sorted(hosts_during),
                       nack_reason=client.get("last_nack", {}).get("eds", "")[:200],
                       envoy_versions_before=versions0)
    if nacks != 1:
        out.violations.append(f"caravan_xds_nacks_total{{type=eds}} grew by {nacks}, want 1")
    if pushes_after != pushes:
        out.violations.append(f"{pushes_after - pushes} EDS pushes after the NACK (want 0)")
    if hosts_during != good_hosts:
        out.violations.append(f"Envoy's hosts while parked {sorted(hosts_during)} != last good "
                              f"{sorted(good_hosts)}")
    return out


def _serving(endpoint: str) -> bool:
    from caravan.local.health import grpc_serving

    return grpc_serving(endpoint)


__all__ = ["CLUSTER", "FaultOutcome", "control_plane_restart", "rejected_push",
           "replica_kill", "scale_in_drain"]
