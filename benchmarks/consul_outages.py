"""Consul outages under load, through the real Envoy: does serving survive, and how soon
after Consul's return does a change reach Envoy?

    .venv/bin/python benchmarks/consul_outages.py [--outage-s 30] [--workers 3]

One stack for every scenario, all on 127.0.0.1 (free ports), started through
``caravan.local.launch``: the Consul fake (``tests/fakes/consul/``, loaded by
``fakes.load_fake``; Consul's failure modes from its source) with ACLs on (default deny, the control
plane's token holding exactly the documented policy) -> one ``caravan xds --consul``
subprocess -> a real Envoy -> three real replicas (``tritonserver``, simulated vLLM
engine; two registered, one spare). ``workers`` threads send stream=false
ModelStreamInfer requests through Envoy the whole time (bounded by count and time).

Scenarios (issue 14):

1. leader loss: the servers lose their leader for ``outage_s`` while the agent stays up
   and holds each query ``rpc_hold_timeout`` (7 s, Consul's default) before answering
   500 "No cluster leader". Then a leader returns and the spare is registered at once:
   we time the leader's return -> the spare in Envoy's cluster (admin ``/clusters``).
2. token swap: the control plane's token file (``consul.token_file``) is rewritten with a
   token without ``node:read``; Consul keeps answering 200 with every entry filtered out.
   We time the swap -> the first ``acl_filtered`` failure the control plane counts (it
   re-reads the file every 0.25 s and aborts its blocked queries), check that Envoy's
   cluster keeps its replicas for ``hold_s``, then write the good token back and time ->
   discovery up again.
2b. policy edit: the same token's policy loses ``node:read`` in Consul. Consul wakes no
   blocked query on an ACL change, so this is seen when a blocking query next ends (at
   most ``consul.wait_s``).
3. refused connections: the agent is down (connections refused) for ``outage_s``, then
   back with its state; the spare is registered at once; return -> spare in Envoy.

Promises: 0 failed requests in every scenario; return -> spare in Envoy <= 1 s; a token
swap counted within about a second, a policy edit within one blocking query
(``consul.wait_s`` = 5 s here); no replica lost. ``consul.timeout_s`` keeps its default (10 s), above the agent's 7 s
hold, so a held query is answered rather than abandoned. Prints a table and writes
benchmarks/results/consul_outages.json; about 90 s on 2 cores with the default 30 s
outages (``--outage-s 5`` for a quick run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import yaml
from rich.console import Console
from rich.table import Table

from caravan.discovery.consul_acl import control_plane_policy
from caravan.local.launch import (
    Launcher,
    RunningReplica,
    control_plane_ready,
    envoy_hosts,
    http_get,
    serving_hosts,
    stream_request,
    wait_until,
)
from caravan.local.process import free_port
from caravan.spec import PlatformSpec, parse_spec
from caravan.triton.launcher import ReplicaOptions
from fakes import load_fake

if TYPE_CHECKING:
    from tests.fakes.consul import ConsulFake

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "consul_outages.json"
MODEL = "alpha"
CLUSTER = f"model-{MODEL}"
TOKEN = "c0ffee00-1234-4abc-8def-00000000beef"
NO_NODE_READ_TOKEN = "c0ffee00-1234-4abc-8def-0000000000b2"
SWAP_TARGET_S = 1.0
NO_NODE_READ = 'service_prefix "triton-" { policy = "read" }\n'
RPC_HOLD_S = 7.0
WAIT_S = 5
RECOVERY_TARGET_S = 1.0
REPLICA_OPTIONS = ReplicaOptions(time_scale=0.01, stream_interval_ms=0, exit_timeout_s=10)


def consul_fake(**kw: Any) -> ConsulFake:
    """A new Consul fake (``tests/fakes/consul/``)."""
    fake: ConsulFake = load_fake("consul").ConsulFake(**kw)
    return fake


# ------------------------------------------------------------------------------ load


@dataclass
class Load:
    """``workers`` threads of stream=false requests through Envoy, until ``stop()``,
    ``max_requests`` in all or ``max_s``. Records (ended at, ok, replica or error)."""

    url: str
    workers: int = 3
    max_requests: int = 200_000
    max_s: float = 600.0
    results: list[tuple[float, bool, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        deadline = time.monotonic() + self.max_s
        for w in range(self.workers):
            t = threading.Thread(target=self._run, args=(w, deadline), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _run(self, worker: int, deadline: float) -> None:
        with grpc.insecure_channel(self.url) as ch:
            for i in range(self.max_requests // self.workers):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                reply = stream_request(self.url, MODEL, {"x-model": MODEL,
                                                         "x-session-id": f"w{worker}-{i}"},
                                       request_id=str(i), channel=ch, timeout_s=10)
                with self._lock:
                    self.results.append((time.monotonic(), reply.ok, reply.upstream
                                         if reply.ok else f"{reply.outcome} {reply.message}"))

    def count(self) -> int:
        with self._lock:
            return len(self.results)

    def between(self, t0: float, t1: float) -> tuple[int, list[str]]:
        """(requests that ended in [t0, t1], their errors)."""
        with self._lock:
            chosen = [r for r in self.results if t0 <= r[0] <= t1]
        return len(chosen), [r[2] for r in chosen if not r[1]]

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)


# ----------------------------------------------------------------------------- stack


@dataclass
class Stack:
    fake: ConsulFake
    spec: PlatformSpec
    replicas: list[RunningReplica]
    load: Load

    @property
    def admin(self) -> int:
        return self.spec.envoy.admin_port

    @property
    def cp_admin(self) -> int:
        return self.spec.control_plane.admin_port

    def register(self, r: RunningReplica) -> None:
        self.fake.register(f"triton-{r.model}", r.id, port=r.port, address="127.0.0.1",
                           meta={"metrics_port": str(r.metrics_port), "model": r.model})

    def in_envoy(self, r: RunningReplica) -> bool:
        return r.endpoint in envoy_hosts(self.admin, CLUSTER)

    def baseline(self) -> set[str]:
        return {r.endpoint for r in self.replicas[:2]}

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the control plane's samples of ``name`` whose labels include ``labels``."""
        _, text = http_get(self.cp_admin, "/metrics")
        want = [f'{k}="{v}"' for k, v in labels.items()]
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " ") \
                    and all(w in line for w in want):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def failures_by_kind(self) -> dict[str, float]:
        """``caravan_discovery_failures_total`` of the model, by ``kind``."""
        _, text = http_get(self.cp_admin, "/metrics")
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("caravan_discovery_failures_total{"):
                kind = line.split('kind="', 1)[1].split('"', 1)[0]
                out[kind] = out.get(kind, 0.0) + float(line.rsplit(" ", 1)[1])
        return out

    def reset(self) -> None:
        """Back to the baseline: spare deregistered, Envoy serving exactly two replicas."""
        spare = self.replicas[2]
        with contextlib.suppress(Exception):  # not registered: nothing to undo
            self.fake.deregister(spare.id)
        wait_until(lambda: serving_hosts(self.admin, CLUSTER) == self.baseline()
                   and set(envoy_hosts(self.admin, CLUSTER)) == self.baseline(),
                   60, "Envoy back at the baseline")


def make_spec(consul_address: str, token_file: Path) -> PlatformSpec:
    return parse_spec({
        "models": [{"name": MODEL, "engine": {"model": f"m/{MODEL}"},
                    "routing": {"maglev_table_size": 1031, "retries": 1, "unary_timeout_s": 10}}],
        "envoy": {"listen_port": free_port(), "admin_port": free_port()},
        "control_plane": {"xds_port": free_port(), "admin_port": free_port(),
                          "debounce_quiet_ms": 20, "debounce_max_ms": 200},
        # timeout_s stays 10 s (the default): above the agent's 7 s hold, so a held query
        # is answered (500 or, once a leader is back, 200) rather than abandoned
        "consul": {"address": consul_address, "wait_s": WAIT_S,
                   "token_file": str(token_file)},
    }, "consul-outages")


# ------------------------------------------------------------------------- scenarios


def outage(stack: Stack, name: str, outage_s: float, begin: Callable[[], object],
           end: Callable[[], object], kind: str) -> dict[str, Any]:
    """An outage of ``outage_s`` under load, then the spare registered as Consul returns."""
    stack.reset()
    spare = stack.replicas[2]
    before = stack.failures_by_kind()
    t_start = time.monotonic()
    begin()
    time.sleep(outage_s)
    ready_during = control_plane_ready(stack.cp_admin)
    hosts_during = sorted(envoy_hosts(stack.admin, CLUSTER))
    after = stack.failures_by_kind()
    failures = {k: v - before.get(k, 0.0) for k, v in after.items() if v > before.get(k, 0.0)}
    t_back = time.monotonic()
    end()
    stack.register(spare)
    arrived = wait_until(lambda: stack.in_envoy(spare), 60, "spare in Envoy's cluster",
                         every_s=0.01)
    recovery = arrived - t_back
    wait_until(lambda: spare.endpoint in serving_hosts(stack.admin, CLUSTER), 30, "spare healthy")
    time.sleep(1.0)
    requests, errors = stack.load.between(t_start, time.monotonic())
    return {"scenario": name, "outage_s": round(t_back - t_start, 2), "requests": requests,
            "failed": len(errors), "errors": errors[:5], "failed_queries_by_kind": failures,
            "expected_kind": kind, "control_plane_ready_during": ready_during,
            "envoy_hosts_during": len(hosts_during),
            "return_to_new_replica_in_envoy_s": round(recovery, 3),
            "target_s": RECOVERY_TARGET_S,
            "met": not errors and recovery <= RECOVERY_TARGET_S and kind in failures}


def token_swap(stack: Stack, hold_s: float, name: str, swap: Callable[[], object],
               restore: Callable[[], object], bound_s: float) -> dict[str, Any]:
    """The control plane's reads lose node:read under load (``swap``), then get it back."""
    stack.reset()
    before = stack.metric("caravan_discovery_failures_total", kind="acl_filtered")
    t_swap = time.monotonic()
    swap()
    counted = wait_until(lambda: stack.metric("caravan_discovery_failures_total",
                                              kind="acl_filtered") > before,
                         WAIT_S * 3, "the swap counted", every_s=0.02) - t_swap
    time.sleep(hold_s)
    kept = set(envoy_hosts(stack.admin, CLUSTER))
    _, readyz = http_get(stack.cp_admin, "/readyz")
    t_fix = time.monotonic()
    restore()
    restored = wait_until(lambda: stack.metric("caravan_discovery_up", model=MODEL) == 1,
                          WAIT_S * 3, "discovery up again", every_s=0.02) - t_fix
    time.sleep(1.0)
    requests, errors = stack.load.between(t_swap, time.monotonic())
    lost = sorted(stack.baseline() - kept)
    return {"scenario": name, "requests": requests,
            "failed": len(errors), "errors": errors[:5],
            "swap_to_error_counted_s": round(counted, 3), "bound_s": bound_s,
            "hold_s": hold_s, "replicas_kept_in_envoy": len(kept & stack.baseline()),
            "replicas_lost": lost, "readyz_during": readyz.strip().splitlines(),
            "policy_fixed_to_discovery_up_s": round(restored, 3),
            "met": not errors and not lost and counted <= bound_s}


def run(tmp: Path, outage_s: float, workers: int, hold_s: float, console: Console) -> dict[str, Any]:
    fake = consul_fake(acl_default_policy="deny")
    fake.set_token(TOKEN, control_plane_policy("triton-"))
    fake.set_token(NO_NODE_READ_TOKEN, NO_NODE_READ)
    fake.start()
    token_file = tmp / "consul.token"
    token_file.write_text(TOKEN + "\n")
    spec = make_spec(fake.address, token_file)
    spec_path = tmp / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    try:
        with Launcher(tmp) as launcher:
            reps = launcher.replicas([f"{MODEL}-{i}" for i in range(3)], MODEL, REPLICA_OPTIONS)
            load = Load(f"127.0.0.1:{spec.envoy.listen_port}", workers=workers,
                        max_s=10 * outage_s + 600)
            stack = Stack(fake, spec, reps, load)
            for r in reps[:2]:
                stack.register(r)
            launcher.control_plane(spec_path, port=spec.control_plane.xds_port,
                                   admin_port=spec.control_plane.admin_port, consul=True,
                                   node_id="cp", name="cp", ready=True)
            launcher.envoy(spec, [("127.0.0.1", spec.control_plane.xds_port)], node_id="outages")
            wait_until(lambda: serving_hosts(stack.admin, CLUSTER) == stack.baseline(), 60,
                       "Envoy serving")
            load.start()
            wait_until(lambda: load.count() >= 20, 30, "load running")
            rows = scenarios(stack, outage_s, hold_s, console, token_file)
            load.stop()
            served = Counter(r[2] for r in load.results if r[1])
            return {"scenarios": rows, "requests_total": load.count(),
                    "served_per_replica": dict(served)}
    finally:
        fake.stop()


def scenarios(stack: Stack, outage_s: float, hold_s: float, console: Console,
              token_file: Path) -> list[dict[str, Any]]:
    fake = stack.fake
    rows = []
    console.print(f"leader loss {outage_s:g} s (agent holds queries {RPC_HOLD_S:g} s) ...")
    rows.append(outage(stack, f"leader loss {outage_s:g} s (agent up, rpc hold {RPC_HOLD_S:g} s)",
                       outage_s, lambda: fake.lose_leader(hold_s=RPC_HOLD_S), fake.regain_leader,
                       "leaderless"))
    console.print("token file swapped to a token without node:read ...")
    rows.append(token_swap(
        stack, hold_s, "token file swapped to a token without node:read",
        lambda: token_file.write_text(NO_NODE_READ_TOKEN + "\n"),
        lambda: token_file.write_text(TOKEN + "\n"), SWAP_TARGET_S))
    console.print("the token's policy loses node:read ...")
    rows.append(token_swap(
        stack, hold_s, "policy edit: the token loses node:read",
        lambda: fake.set_token(TOKEN, NO_NODE_READ),
        lambda: fake.set_token(TOKEN, control_plane_policy("triton-")), WAIT_S * 1.1 + 1))
    console.print(f"refused connections {outage_s:g} s ...")
    rows.append(outage(stack, f"agent down {outage_s:g} s (connections refused)", outage_s,
                       fake.stop, fake.start, "unreachable"))
    return rows


# ------------------------------------------------------------------------------ report


def print_report(res: dict[str, Any], console: Console) -> None:
    table = Table(title="Consul outages under load, through the real Envoy")
    for col in ("scenario", "requests", "failed", "control plane saw", "recovery", "verdict"):
        table.add_column(col)
    for row in res["scenarios"]:
        if "return_to_new_replica_in_envoy_s" in row:
            saw = "failed queries: " + ", ".join(
                f"{v:g} {k}" for k, v in sorted(row["failed_queries_by_kind"].items()))
            rec = f"return -> new replica in Envoy {row['return_to_new_replica_in_envoy_s']:.3f} s"
        else:
            saw = (f"acl_filtered counted {row['swap_to_error_counted_s']:.3f} s after the swap; "
                   f"{row['replicas_kept_in_envoy']}/2 replicas kept")
            rec = f"fixed -> discovery up {row['policy_fixed_to_discovery_up_s']:.3f} s"
        table.add_row(row["scenario"], str(row["requests"]), str(row["failed"]), saw, rec,
                      "met" if row["met"] else "MISSED")
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--outage-s", type=float, default=30.0, help="leader loss and agent-down length")
    p.add_argument("--hold-s", type=float, default=10.0, help="how long the bad token is kept")
    p.add_argument("--workers", type=int, default=3, help="load threads through Envoy")
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    if a.outage_s <= 0 or a.workers < 1 or a.hold_s < 0:
        p.error("--outage-s > 0, --hold-s >= 0 and --workers >= 1 required")
    console = Console(width=150)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="caravan-outages-") as d:
        res = run(Path(d), a.outage_s, a.workers, a.hold_s, console)
    res["meta"] = {"command": " ".join(["benchmarks/consul_outages.py", *(argv or sys.argv[1:])]),
                   "python": platform.python_version(), "machine": platform.machine(),
                   "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                   "duration_s": round(time.time() - started, 1), "consul_wait_s": WAIT_S,
                   "rpc_hold_s": RPC_HOLD_S, "workers": a.workers}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1) + "\n")
    print_report(res, console)
    console.print(f"wrote {a.out}")
    return 0 if all(r["met"] for r in res["scenarios"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
