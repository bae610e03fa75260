"""The fault scenarios, as functions returning a ``FaultOutcome`` (test code; run by
``test_faults.py``, and at full duration by ``benchmarks/reliability.py`` through
pytest).

Each scenario starts its own stack under ``tmp`` (real ``tritonserver`` replicas, real
control plane, real Envoy), drives bounded traffic through Envoy (short stream=false
requests over ModelStreamInfer, ``faults_load``), injects one fault, measures requests
sent / failed and a recovery time, and stops everything it started.
``FaultOutcome.violations`` lists every broken promise (empty = promise kept); the
tests assert it is empty, the benchmark records it.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from faults_load import RequestLoad, Result, StreamProbe, session_replica, summarize
from faults_stack import (
    CLUSTER,
    MODEL,
    ManualStack,
    cp_metric,
    envoy_client,
    envoy_hosts,
    envoy_in_sync,
    envoy_stat,
    envoy_versions,
    fault_spec,
    serving_hosts,
    start_local_stack,
    wait_until,
)

from caravan.local.launch import control_plane_ready

RESYNC_LIMIT_S = 1.0
DEAD_ENGINE_LIMIT_S = 10.0


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

    def add_load(self, results: list[Result], failures_allowed: bool = False) -> None:
        s = summarize(results)
        self.sent, self.failed = int(s["sent"]), int(s["failed"])  # type: ignore[call-overload]
        self.details["requests"] = s
        if self.failed and not failures_allowed:
            self.violations.append(f"{self.failed} of {self.sent} requests failed: "
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
    load = RequestLoad(stack.endpoint, MODEL, workers=3, max_s=90 + down_s).start()
    try:
        load.wait_for(20)
        xds = stack.infra("xds")
        killed = time.monotonic()
        xds.signal(signal.SIGKILL)
        wait_until(lambda: not xds.alive(), 5, "xds gone")
        stack.scale_to(MODEL, 3)  # a change Envoy can only learn after the restart
        wait_until(lambda: len(stack.replicas(MODEL)) == 3, 60, "third replica registered")
        new = next(r.endpoint for r in stack.replicas(MODEL)
                   if r.endpoint not in envoy_hosts(stack.ports.envoy_admin))
        time.sleep(max(0.0, killed + down_s - time.monotonic()))
        restarted = time.monotonic()
        stack.restart_infra("xds")
        admin = stack.ports.xds_admin
        ready = wait_until(lambda: control_plane_ready(admin), 30, "xds ready again")
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


def wire_resets(results: list[Result], victim: str) -> list[Result]:
    """Short requests reset while their answer was on the wire: INTERNAL RST_STREAM from
    the killed replica (Envoy had forwarded its response headers, so it could not retry)."""
    return [r for r in results if not r.ok and r.status == "INTERNAL" and "RST_STREAM" in r.message
            and r.replica == victim]


def _short_request_violations(results: list[Result], victim: str, killed: float) -> list[str]:
    failed = [r for r in results if not r.ok]
    on_wire = wire_resets(results, victim)
    after = sum(1 for r in results if r.ended > killed)
    out = [f"{r.status} from {r.replica or 'no replica'}: {r.message[:160]}"
           for r in failed if r not in on_wire][:5]
    if len(on_wire) > max(1, after // 100):
        out.append(f"{len(on_wire)} short requests reset on the wire, more than 1 % of {after}")
    return out


def replica_kill(tmp: Path, after_headers: int = 2, before_headers: int = 2,
                 elsewhere: int = 2, after_s: float = 4.0) -> FaultOutcome:
    """SIGKILL one replica (still registered, as in Consul until its check fails) under
    load, with long requests in flight on it and elsewhere. Plain Maglev hashing
    (no bounded load), so each probe is aimed at a replica by its session.

    Promise, as measured: 0 failed short requests (Envoy retries a request whose
    upstream resets or refuses before response headers, on another replica, then
    ejects the victim); a long request on the victim that has no response yet
    (stream=false: nothing is sent before the whole answer, so no response headers) is
    retried on another replica and completes; a stream on the victim that already had a
    response (stream=true, headers sent) fails at once with INTERNAL "RST_STREAM" (Envoy
    can only reset it); streams on other replicas complete."""
    out = FaultOutcome("replica SIGKILLed under load (stays registered)",
                       "no short request fails unless its answer was on the wire when the "
                       "replica died (then INTERNAL RST_STREAM, at most 1 % of requests after "
                       "the kill); a request on the victim before its first "
                       "response is retried elsewhere and completes; a stream on the victim "
                       "after its first response fails at once with INTERNAL RST_STREAM, not a "
                       "hang; streams elsewhere complete",
                       recovery="kill -> Envoy marks the victim unhealthy/ejected")
    stack = ManualStack(tmp, replicas=3, time_scale=0.1, spec=fault_spec(3, hash_balance_factor=None)).start()
    admin = stack.ports.envoy_admin
    load = RequestLoad(stack.endpoint, MODEL, workers=3, max_s=90).start()
    probes: list[StreamProbe] = []
    try:
        load.wait_for(20)
        victim = f"{MODEL}-1"
        victim_ep = stack.replicas[victim].endpoint
        sessions = {f"probe-{i}": session_replica(stack.endpoint, MODEL, f"probe-{i}") for i in range(48)}
        on_victim = [s for s, ep in sessions.items() if ep == victim_ep]
        others = [s for s, ep in sessions.items() if ep != victim_ep]
        if len(on_victim) < after_headers + before_headers or len(others) < elsewhere:
            raise RuntimeError(f"48 sessions spread too unevenly: {Counter(sessions.values())}")
        streaming = [StreamProbe(stack.endpoint, MODEL, s, stream=True).start()
                     for s in on_victim[:after_headers] + others[:elsewhere]]
        for p in streaming:
            if not p.first_chunk.wait(15):
                raise TimeoutError(f"stream {p.session}: no first response in 15 s")
        waiting = [StreamProbe(stack.endpoint, MODEL, s, stream=False).start()
                   for s in on_victim[after_headers:after_headers + before_headers]]
        time.sleep(0.5)  # in the victim's engine now; no response (so no headers) before ~4 s
        early = [p.session for p in waiting if p.first_chunk.is_set()]
        retries0 = envoy_stat(admin, f"cluster.{CLUSTER}.upstream_rq_retry")
        refused0 = envoy_stat(admin, f"cluster.{CLUSTER}.upstream_cx_connect_fail")
        killed = time.monotonic()
        stack.replicas[victim].proc.signal(signal.SIGKILL)
        probes = streaming + waiting
        for p in probes:
            p.done.wait(40)
        ejected = wait_until(lambda: victim_ep not in serving_hosts(admin), 15,
                             "victim out of Envoy's healthy set")
        time.sleep(max(0.0, killed + after_s - time.monotonic()))
        retries = envoy_stat(admin, f"cluster.{CLUSTER}.upstream_rq_retry") - retries0
        refused = envoy_stat(admin, f"cluster.{CLUSTER}.upstream_cx_connect_fail") - refused0
    finally:
        results = load.stop()
        stack.stop()
    out.add_load(results, failures_allowed=True)  # judged below
    out.recovery_s = round(ejected - killed, 3)
    out.details.update(victim=victim_ep, probes=[p.to_json() for p in probes],
                       requests_after_kill=sum(1 for r in results if r.ended > killed),
                       served_by_after_kill=dict(Counter(r.replica for r in results
                                                         if r.started > killed)),
                       envoy_retries=retries, envoy_connect_failures=refused,
                       answered_before_kill=early,
                       short_resets_on_the_wire=len(wire_resets(results, victim_ep)),
                       short_failures_not_on_the_wire=sum(1 for r in results if not r.ok)
                       - len(wire_resets(results, victim_ep)))
    if early:
        out.violations.append(f"stream=false probes {early} had a response before the kill")
    out.violations += _short_request_violations(results, victim_ep, killed)
    for p in streaming:
        if p.first_replica == victim_ep:
            reset = p.outcome == "INTERNAL" and "RST_STREAM" in p.message
            if not reset:
                out.violations.append(f"stream {p.session} on the victim ended {p.outcome} "
                                      f"(want INTERNAL RST_STREAM): {p.message[:200]}")
        elif p.outcome != "OK":
            out.violations.append(f"stream {p.session} on {p.first_replica} (not the victim) "
                                  f"ended {p.outcome}: {p.message[:200]}")
    for p in waiting:
        if p.outcome != "OK" or p.replica in ("", victim_ep):
            out.violations.append(f"request {p.session} (victim, before its first response) ended "
                                  f"{p.outcome} from {p.replica or 'no replica'} (want OK from "
                                  f"another replica): {p.message[:200]}")
    if retries < before_headers:
        out.violations.append(f"Envoy counted {retries} retries, fewer than the {before_headers} "
                              "requests caught before their first response")
    return out


# --------------------------------------------------------------------- scale-in


def scale_in_drain(tmp: Path, streams: int = 4) -> FaultOutcome:
    """``LocalStack.scale_to`` 3 -> 1 under load with long streams in flight.
    Promise: zero failed requests (short ones and streams): draining replicas get no new
    requests (DRAINING in Envoy, then SIGTERM after the grace period) and finish the
    ones they have before exiting (tritonserver's model finalize waits for them)."""
    out = FaultOutcome("scale-in 3 -> 1 with draining under load",
                       "0 failed requests (short ones and in-flight streams)",
                       recovery="scale_to -> drained replicas gone from Envoy")
    stack = start_local_stack(tmp, replicas=3, time_scale=0.05)
    load = RequestLoad(stack.endpoint, MODEL, workers=3, max_s=60).start()
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
    out.details["streams"] = [p.to_json() for p in probes]
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
    load = RequestLoad(stack.endpoint, MODEL, workers=3, max_s=60).start()
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
        (extra,) = stack.start_replicas(1)
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


# --------------------------------------------------------------------- dead engine


def dead_engine(tmp: Path, limit_s: float = DEAD_ENGINE_LIMIT_S) -> FaultOutcome:
    """``caravan up``'s stack with 2 replicas under bounded load; one replica's engine
    dies (its ``fault_file``: the tritonserver process lives on). The vLLM backend's
    health check unloads the model (ModelReady false); the supervisor, checking ModelReady
    every second, unregisters the replica (and restarts it in place, as Nomad's
    ``check_restart`` does); the control plane removes it from Envoy. Promise: within
    ``limit_s`` of the engine's death no new request reaches that replica (read from
    x-caravan-upstream) until it is back; the requests that fail meanwhile are counted,
    and every one of them failed on that replica (in-stream errors: Envoy cannot retry an
    answered stream). Also recorded: when the restarted replica serves again."""
    out = FaultOutcome("replica's engine dies (process lives) under load, caravan up stack",
                       f"no new request reaches the replica <= {limit_s:g} s after its engine "
                       "died; failed requests counted, all on that replica",
                       recovery="engine dies -> last request that reached the replica")
    stack = start_local_stack(tmp, replicas=2)
    admin = stack.ports.envoy_admin
    load = RequestLoad(stack.endpoint, MODEL, workers=3, max_s=120).start()
    try:
        load.wait_for(40)
        plan = stack.replica_plans(MODEL)[0]
        victim = plan.endpoint
        died = time.monotonic()
        plan.fault_file.touch()
        gone = wait_until(lambda: victim not in envoy_hosts(admin), limit_s + 20,
                          "the replica out of Envoy's cluster")
        load.wait_for(load.count() + 60, 30)  # traffic goes on: none of it may reach the replica
        back = wait_until(lambda: victim in envoy_hosts(admin), 90,
                          "the restarted replica in Envoy's cluster again")
        load.wait_for(load.count() + 40, 30)
    finally:
        results = load.stop()
        stack.stop()
    # Back: the restarted replica's first answer, or its re-registration seen in Envoy's
    # admin API (polled, so a request may reach it a moment earlier), whichever came first.
    back = min([back] + [r.started for r in results if r.replica == victim and r.ok and r.started > gone])
    since = [r for r in results if r.ended >= died]  # in flight at the death, or sent after
    away = [r for r in since if r.started < back]  # before the restarted replica was back
    reached = [r for r in away if r.replica == victim]
    failed = [r for r in since if not r.ok]
    last = max((r.started for r in reached), default=died)
    out.add_load(results, failures_allowed=True)
    out.failed = len(failed)
    out.recovery_s = round(last - died, 3)
    out.details.update(
        victim=victim, requests_after_death=len(away), reached_victim_after_death=len(reached),
        failed_after_death=len(failed), failed_on_victim=sum(r.replica == victim for r in failed),
        failure_messages=dict(Counter(f"{r.status}: {_gist(r.message)}" for r in failed)),
        death_to_out_of_envoy_s=round(gone - died, 3),
        requests_after_last_on_victim=sum(1 for r in away if r.started > last),
        death_to_back_in_envoy_s=round(back - died, 3),  # first answer or re-registration
        served_by_victim_after_back=sum(1 for r in results if r.started >= back and r.replica == victim
                                        and r.ok),
        served_by_after_death=dict(Counter(r.replica for r in away if r.ok)))
    if out.recovery_s > limit_s:
        out.violations.append(f"a request reached the replica {out.recovery_s} s after its engine died "
                              f"(> {limit_s:g} s)")
    if (before := [r for r in results if r.ended < died and not r.ok]):
        out.violations.append(f"{len(before)} requests failed before the engine died: "
                              f"{[r.message for r in before[:3]]}")
    if (elsewhere := [r for r in failed if r.replica != victim]):
        out.violations.append(f"{len(elsewhere)} failed requests were not on the dead replica: "
                              f"{[(r.replica, r.status, r.message) for r in elsewhere[:3]]}")
    if (later := [r for r in failed if r.started >= back]):
        out.violations.append(f"{len(later)} requests failed after the replica was back: "
                              f"{[(r.replica, r.status, r.message) for r in later[:3]]}")
    if out.details["requests_after_last_on_victim"] < 60:
        out.violations.append("too little traffic after the replica's removal to show none reached it")
    return out


def _gist(message: str) -> str:
    """A failure message without its request-specific parts (for counting kinds)."""
    return message.split(": ", 1)[-1][:90] if message.startswith("[request id") else message[:90]


__all__ = ["CLUSTER", "FaultOutcome", "control_plane_restart", "dead_engine", "rejected_push",
           "replica_kill", "scale_in_drain"]
