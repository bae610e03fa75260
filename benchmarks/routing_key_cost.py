"""What deriving the prefix key costs Envoy: the same load through two real Envoys at
the same time, one whose model routes by ``prefix`` (the proxy-wasm key filter
``caravan/wasm/prefixkey.c``, ``caravan.xds.routing``), one by ``session`` (the same
Maglev cluster, no filter).

    .venv/bin/python benchmarks/routing_key_cost.py [--concurrency 50] [--rounds 3]

Stack (127.0.0.1): ``--replicas`` real tritonserver replicas answering after a fixed
``--ms-per-token`` x tokens (``ReplicaOptions.fixed_ms_per_token``: no batching, so nothing
hides a proxy's delay), registered once; per arm a ``caravan xds --registry`` control
plane (one spec each, the only difference ``routing.policy``) and an Envoy
(``--concurrency 1`` each). Per round, one ``caravan bench --no-stream`` process per arm,
started together (rotating which starts first), with the same seed (the same prompts of
``--prompt-words`` words, > 16 KiB by default so the first message spans several HTTP/2
frames, in the same order), at ``--concurrency`` each, no session header.

Figures (medians over rounds): each arm's p50 / p99 end-to-end latency and req/s; the
added p50 (prefix arm p50 minus session arm p50) and the paired per-request difference
(the same request index through both; its p50, the figure compared with the target: the
arms' own p50s vary by several ms from round to round); each Envoy's CPU per request
(utime + stime from /proc over the round, divided by its requests). Target (issue 15):
added p50 <= 0.2 ms at concurrency 50. Writes benchmarks/results/routing_key_cost.json.
(The comparison with the grpc_field_extraction + Lua filters this filter replaced is
``routing_key_cost_candidates.json``, docs/routing.md.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

from caravan.bench.results import SweepResult, read_json
from caravan.bench.stats import percentile
from caravan.discovery.registry_file import write_registry
from caravan.local.launch import Launcher, http_get, serving_hosts, wait_until
from caravan.local.process import ChildProcess, caravan_argv, free_port
from caravan.spec import PlatformSpec, parse_spec
from caravan.triton.launcher import ReplicaOptions

MODEL = "keycost"
RESULTS = Path(__file__).parent / "results" / "routing_key_cost.json"
TARGET_MS = 0.2
BASE = "session"
ARMS = (BASE, "prefix")  # each arm's routing.policy is its name
KEYED = ARMS[1:]


def spec_for(policy: str) -> PlatformSpec:
    return parse_spec({
        "models": [{"name": MODEL, "engine": {"model": "simulated", "max_model_len": 16384},
                    "routing": {"policy": policy, "maglev_table_size": 1031, "retries": 0}}],
        "envoy": {"listen_port": free_port(), "admin_port": free_port()},
        "control_plane": {"xds_port": free_port(), "admin_port": free_port()},
    })


def start(launch: Launcher, args: argparse.Namespace) -> dict[str, tuple[str, int]]:
    """Replicas, then per arm a control plane and an Envoy; {arm: (URL, Envoy PID)}."""
    options = ReplicaOptions(stream_interval_ms=0, fixed_ms_per_token=args.ms_per_token, exit_timeout_s=5)
    specs = {arm: spec_for(arm) for arm in ARMS}
    replicas = launch.replicas([f"r{i}" for i in range(args.replicas)], specs[BASE].model(MODEL), options)
    registry = launch.state_dir / "registry.json"
    write_registry(registry, [r.registration() for r in replicas])
    out = {}
    want = {r.endpoint for r in replicas}
    for arm, spec in specs.items():
        path = launch.state_dir / f"{arm}.yaml"
        path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
        cp = spec.control_plane
        launch.control_plane(path, port=cp.xds_port, admin_port=cp.admin_port, registry=registry,
                             name=f"xds-{arm}", ready=True)
        envoy = launch.envoy(spec, [("127.0.0.1", cp.xds_port)], node_id=f"keycost-{arm}")
        wait_until(lambda s=spec: serving_hosts(s.envoy.admin_port, f"model-{MODEL}") == want, 60,
                   f"{arm}: replicas healthy in Envoy")
        out[arm] = (f"127.0.0.1:{spec.envoy.listen_port}", envoy.pid)
        ADMIN[arm] = spec.envoy.admin_port
    return out


ADMIN: dict[str, int] = {}


def envoy_times(arm: str) -> dict[str, str]:
    """Envoy's own cumulative quantiles (ms): downstream request time (first byte in to
    last byte out) and upstream request time (from the upstream request's start)."""
    _, text = http_get(ADMIN[arm], "/stats?filter=(downstream_rq_time|upstream_rq_time)$")
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if "P50" in value:
            out[name] = value
    return out


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(arms: dict[str, tuple[str, int]], args: argparse.Namespace, tmp: Path, first: int
         ) -> tuple[dict[str, SweepResult], dict[str, float]]:
    """One round: a ``caravan bench`` per arm, started together (from the ``first``-th arm
    on, so no arm always starts first); results and Envoy CPU s."""
    outs = {arm: Path(tempfile.mkdtemp(dir=tmp)) for arm in arms}
    before = {arm: cpu_s(pid) for arm, (_, pid) in arms.items()}
    names = list(arms)
    order = names[first % len(names):] + names[:first % len(names)]
    with contextlib.ExitStack() as stack:
        procs = {}
        for arm in order:
            url = arms[arm][0]
            argv = caravan_argv("bench", "--url", url, "--model", MODEL, "--no-stream",
                                "--concurrency", str(args.concurrency), "--requests", str(args.requests),
                                "--input-tokens", str(args.prompt_words), "--output-tokens", "20",
                                "--output-spread", "0.9", "--seed", "7", "--no-count-tokens",
                                "--no-progress", "--no-plot", "--out", str(outs[arm]))
            procs[arm] = stack.enter_context(ChildProcess(f"bench-{arm}", argv, outs[arm] / "bench.log"))
        codes = {arm: p.proc.wait(timeout=600) if p.proc is not None else -1 for arm, p in procs.items()}
    used = {arm: cpu_s(pid) - before[arm] for arm, (_, pid) in arms.items()}
    for arm, code in codes.items():
        if code != 0:
            raise SystemExit(f"caravan bench ({arm}) exited {code}: {(outs[arm] / 'bench.log').read_text()[-2000:]}")
    return {arm: read_json(out / "bench.json") for arm, out in outs.items()}, used


def round_figures(results: dict[str, SweepResult], cpu: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    e2e: dict[str, dict[int, float]] = {}
    for arm, result in results.items():
        (lv,) = result.levels
        s = lv.summary
        if s.error_count:
            raise SystemExit(f"{arm}: errors {s.errors}")
        out |= {f"{arm}_p50_ms": s.e2e.median, f"{arm}_p99_ms": s.e2e.p99,
                f"{arm}_req_per_s": s.request_throughput,
                f"{arm}_envoy_cpu_us_per_request": cpu[arm] / s.requests * 1e6,
                f"{arm}_client_loop_lag_p99_ms": lv.client.loop_p99_ms}
        e2e[arm] = {r.index: r.e2e_ms for r in lv.records}
    for arm in KEYED:
        out[f"{arm}_added_p50_ms"] = out[f"{arm}_p50_ms"] - out[f"{BASE}_p50_ms"]
        diffs = [e2e[arm][i] - e2e[BASE][i] for i in e2e[arm].keys() & e2e[BASE].keys()]
        out[f"{arm}_paired_added_p50_ms"] = percentile(diffs, 50)
        out[f"{arm}_added_cpu_us_per_request"] = (out[f"{arm}_envoy_cpu_us_per_request"]
                                                  - out[f"{BASE}_envoy_cpu_us_per_request"])
    return out


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--requests", type=int, default=2000, help="measured requests per arm and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--ms-per-token", type=float, default=20.0,
                   help="fixed service time per token (5 ms makes this box CPU-bound at c=50)")
    p.add_argument("--prompt-words", type=int, default=3000, help="words per prompt (~20 KiB at 3000)")
    args = p.parse_args(argv)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="caravan-keycost-") as tmp, Launcher(Path(tmp) / "stack") as launch:
        arms = start(launch, args)
        for i in range(args.rounds):
            rounds.append(round_figures(*load(arms, args, Path(tmp), i)))
            print(f"round {i + 1}: " + " ".join(f"{k}={v:.3f}" for k, v in rounds[-1].items()), flush=True)
        histograms = {arm: envoy_times(arm) for arm in arms}
        print(json.dumps(histograms, indent=1))
    median = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    met = {arm: median[f"{arm}_paired_added_p50_ms"] <= TARGET_MS for arm in KEYED}
    data = {"args": vars(args), "arms": list(ARMS),
            "target_added_p50_ms": TARGET_MS, "median": median, "rounds": rounds,
            "envoy_histograms": histograms, "met": met}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")
    for arm in KEYED:
        print(f"median {arm}: paired added p50 {median[f'{arm}_paired_added_p50_ms']:.3f} ms "
              f"(unpaired {median[f'{arm}_added_p50_ms']:.3f}), Envoy CPU "
              f"{median[f'{arm}_added_cpu_us_per_request']:+.1f} us/request; target <= {TARGET_MS} ms: "
              f"{'met' if met[arm] else 'NOT met'}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main(sys.argv[1:])
