"""Hung and gray replicas (issue 17 #7), as fault scenarios returning a ``FaultOutcome``
(test code; run by ``test_faults_hung.py``, recorded by ``benchmarks/reliability.py``).

* ``replica_sigstop``: a replica is frozen (SIGSTOP) with streams open on it, then
  thawed (SIGCONT). The kernel keeps its sockets open, so only Envoy's health check,
  its ``close_connections_on_host_health_failure`` and HTTP/2 keepalive notice.
* ``gray_failure``: a replica answers health checks and ModelReady but never answers
  inference (the simulated engine's ``hang`` fault, a test seam), under load. Only the
  route's per-try timeout and outlier detection notice.

Each starts a ``ManualStack`` (real ``tritonserver`` replicas, ``caravan xds``, real
Envoy) with the spec's default timeouts, and stops everything it started. Times are
``time.monotonic()`` seconds.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

from faults_load import RequestLoad, StreamProbe, session_replica
from faults_scenarios import FaultOutcome
from faults_stack import CLUSTER, MODEL, ManualStack, envoy_hosts, envoy_stat, fault_spec, serving_hosts, wait_until

from caravan.spec import Routing
from caravan.triton.settings import FAULT_HANG, FAULT_NONE

LIMIT_S = 10.0
# A stream's retryable ends: UNAVAILABLE, or the reset Envoy gives a stream whose response
# had started (grpcio: INTERNAL "Stream removed (RST_STREAM ...)"; see docs/reliability.md).
RETRYABLE = ("UNAVAILABLE", "INTERNAL")


def _retryable(p: StreamProbe) -> bool:
    return p.outcome == "UNAVAILABLE" or (p.outcome == "INTERNAL" and "RST_STREAM" in p.message)


def _aim(stack: ManualStack, victim_ep: str, n: int) -> tuple[list[str], list[str]]:
    """Sessions that land on the victim, and the others (plain Maglev: sticky)."""
    sessions = {f"s-{i}": session_replica(stack.endpoint, MODEL, f"s-{i}") for i in range(8 * n)}
    on = [s for s, ep in sessions.items() if ep == victim_ep]
    if len(on) < n:
        raise RuntimeError(f"{8 * n} sessions spread too unevenly: {Counter(sessions.values())}")
    return on, [s for s, ep in sessions.items() if ep != victim_ep]


def _stats(admin: int) -> dict[str, int]:
    names = {"retries": f"cluster.{CLUSTER}.upstream_rq_retry",
             "per_try_timeouts": f"cluster.{CLUSTER}.upstream_rq_per_try_timeout",
             "health_check_failures": f"cluster.{CLUSTER}.health_check.failure",
             "keepalive_timeouts": f"cluster.{CLUSTER}.http2.keepalive_timeout",
             "closed_with_active_requests": f"cluster.{CLUSTER}.upstream_cx_destroy_local_with_active_rq",
             "ejections": f"cluster.{CLUSTER}.outlier_detection.ejections_enforced_total",
             "idle_timeouts": "http.caravan.downstream_rq_idle_timeout"}
    return {k: envoy_stat(admin, v) for k, v in names.items()}


def replica_sigstop(tmp: Path, streams: int = 2, waiting: int = 2) -> FaultOutcome:
    """SIGSTOP one of two replicas with ``streams`` streams on it that had their first
    response and ``waiting`` stream=false requests with none yet, under light load; then
    SIGCONT it. Promise: the started streams end within 10 s with a retryable status
    (never a hang); the waiting requests and the short load are retried elsewhere and
    complete (0 failed); the replica is marked unhealthy, and after SIGCONT it is healthy
    and serving again."""
    out = FaultOutcome(
        "replica SIGSTOPped with streams open (process frozen, sockets open)",
        f"started streams on it end <= {LIMIT_S:g} s with a retryable status; requests with no "
        "response yet are retried elsewhere (0 failed); marked unhealthy; back after SIGCONT",
        recovery="SIGSTOP -> last started stream on the replica ended")
    stack = ManualStack(tmp, replicas=2, time_scale=0.1, spec=fault_spec(2, hash_balance_factor=None)).start()
    admin = stack.ports.envoy_admin
    victim = stack.replicas[f"{MODEL}-1"]
    load = RequestLoad(stack.endpoint, MODEL, workers=2, max_s=60, timeout_s=20).start()
    probes: list[StreamProbe] = []
    try:
        load.wait_for(10)
        on_victim, _ = _aim(stack, victim.endpoint, streams + waiting)
        started = [StreamProbe(stack.endpoint, MODEL, s, max_tokens=3000, deadline_s=60).start()
                   for s in on_victim[:streams]]
        for p in started:
            if not p.first_chunk.wait(15):
                raise TimeoutError(f"stream {p.session}: no first response in 15 s")
        held = [StreamProbe(stack.endpoint, MODEL, s, stream=False, max_tokens=1500, deadline_s=60).start()
                for s in on_victim[streams:streams + waiting]]
        probes = started + held
        time.sleep(0.3)  # in the victim's engine now, no response yet
        early = [p.session for p in held if p.first_chunk.is_set()]
        before = _stats(admin)
        stopped = time.monotonic()
        victim.proc.signal(signal.SIGSTOP)
        try:
            unhealthy = wait_until(lambda: "failed_active_hc" in envoy_hosts(admin).get(victim.endpoint, ""),
                                   LIMIT_S + 20, "the frozen replica marked unhealthy")
            for p in probes:
                p.done.wait(LIMIT_S + 30)
            stats = {k: v - before[k] for k, v in _stats(admin).items()}
        finally:
            victim.proc.signal(signal.SIGCONT)
        thawed = time.monotonic()
        back = wait_until(lambda: victim.endpoint in serving_hosts(admin), 20, "the thawed replica healthy")
        n = load.count()
        load.wait_for(n + 30)
        served_again = wait_until(lambda: any(r.replica == victim.endpoint for r in load.snapshot()[n:]),
                                  20, "the thawed replica serving again")
    finally:
        results = load.stop()
        stack.stop()
    out.add_load(results)
    ends = [round(p.ended - stopped, 3) for p in started]
    out.recovery_s = max(ends)
    out.details.update(victim=victim.endpoint, probes=[p.to_json() for p in probes], stream_ends_s=ends,
                       unhealthy_s=round(unhealthy - stopped, 3), envoy=stats,
                       sigcont_to_healthy_s=round(back - thawed, 3),
                       sigcont_to_served_s=round(served_again - thawed, 3),
                       requests_after_stop=sum(1 for r in results if r.ended > stopped))
    if early:
        out.violations.append(f"stream=false probes {early} had a response before the SIGSTOP")
    for p, end in zip(started, ends, strict=True):
        if not _retryable(p) or end > LIMIT_S:
            out.violations.append(f"stream {p.session} ended {p.outcome} {end} s after the SIGSTOP "
                                  f"(want a retryable status <= {LIMIT_S:g} s): {p.message[:160]}")
    for p in held:
        if p.outcome != "OK" or p.replica in ("", victim.endpoint):
            out.violations.append(f"request {p.session} (no response yet) ended {p.outcome} from "
                                  f"{p.replica or 'no replica'} (want OK from the other): {p.message[:160]}")
    return out


def gray_failure(tmp: Path, after_s: float = 2.0) -> FaultOutcome:
    """One of two replicas hangs (health checks and ModelReady still answer, inference
    never does) under load of short stream=false requests. Promise: Envoy ejects it
    within 10 s (outlier detection on per-try timeouts); every request caught on it,
    none of which had a response, is retried on the other replica and completes (0
    failed); none reaches it once ejected; it stays in Envoy's cluster, health-check
    healthy (only the inference-level signal can see it)."""
    routing = Routing()
    out = FaultOutcome(
        "gray replica: answers health checks, never inference, under load",
        f"ejected <= {LIMIT_S:g} s; requests caught on it (no response yet) retried elsewhere, 0 failed",
        recovery="hang -> Envoy ejects the replica (outlier detection)")
    stack = ManualStack(tmp, replicas=2, time_scale=0.1).start()
    admin = stack.ports.envoy_admin
    victim = stack.replicas[f"{MODEL}-1"]
    load = RequestLoad(stack.endpoint, MODEL, workers=4, max_s=60, timeout_s=30).start()
    try:
        load.wait_for(20)
        before = _stats(admin)
        hung = time.monotonic()
        victim.plan.inject_fault(FAULT_HANG)
        ejected = wait_until(lambda: "failed_outlier_check" in envoy_hosts(admin).get(victim.endpoint, ""),
                             LIMIT_S + 20, "the gray replica ejected")
        flags = envoy_hosts(admin).get(victim.endpoint, "")
        n = load.count()
        time.sleep(after_s)
        load.wait_for(n + 20)
        stats = {k: v - before[k] for k, v in _stats(admin).items()}
    finally:
        results = load.stop()
        victim.plan.inject_fault(FAULT_NONE)
        stack.stop()
    out.add_load(results)
    caught = [r for r in results if r.started < ejected and r.ended > hung
              and r.ended - r.started >= routing.per_try_timeout_s]
    out.recovery_s = round(ejected - hung, 3)
    out.details.update(victim=victim.endpoint, flags_when_ejected=flags, envoy=stats,
                       caught_and_retried=len(caught),
                       caught_served_by=dict(Counter(r.replica for r in caught)),
                       served_by_victim_after_hang=sum(1 for r in results if r.started > hung + 0.2
                                                       and r.replica == victim.endpoint),
                       requests_after_hang=sum(1 for r in results if r.ended > hung))
    if out.recovery_s > LIMIT_S:
        out.violations.append(f"ejected {out.recovery_s} s after the hang (> {LIMIT_S:g} s)")
    if "failed_active_hc" in flags:
        out.violations.append(f"the gray replica failed its health check ({flags}): not a gray failure")
    if out.details["served_by_victim_after_hang"]:
        out.violations.append(f"{out.details['served_by_victim_after_hang']} requests answered by the "
                              "hung replica")
    return out


__all__ = ["LIMIT_S", "RETRYABLE", "gray_failure", "replica_sigstop"]
