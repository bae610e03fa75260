"""Latency Envoy adds: the same unary load straight at a replica and through Envoy.

    .venv/bin/python benchmarks/envoy_overhead.py [--placement both|client-alone|envoy-alone]

Starts the local stack (``LocalStack``: one ``caravan replica`` answering almost at
once, ``caravan xds --registry FILE``, real Envoy ``--concurrency 1`` with the
bootstrap from ``caravan.render.envoy``; no Prometheus). The load generator is
``caravan bench --no-stream`` itself, run as its own process (so this process's
supervisor threads never share its GIL), once per arm and round: closed-loop
concurrency levels (``--concurrency 8,50``) and an open-loop Poisson rate capped at
50 in flight (``--rate``). Rounds alternate direct/envoy order.

CPU placement (2 cores, 3 busy parts; ``os.sched_setaffinity`` on every thread):

* ``client-alone``: the load client has core 0 to itself, so it is not
  the bottleneck; replica, Envoy, control plane and this supervisor share core 1, so
  through Envoy the replica's core also runs Envoy (Envoy's CPU shows as latency).
* ``envoy-alone``: Envoy has core 1 to itself (as in production, where it never
  shares with replicas); client and replica share core 0 (equally in both arms).

Both placements run by default, one after the other, against the same stack.

In a closed loop every level saturates the busiest core, so latency there is
concurrency / throughput (Little's law): an added p50 at c=50 measures how much
Envoy lowers throughput, not the proxy's path delay; the rate shape (below
saturation) shows the path delay. Figures are medians over rounds: each arm's
p50/p99, and the paired per-round added ms and ratios (envoy / direct). The client's
event-loop lag p99 is reported beside them; a level whose client lag p99 exceeds
20 ms is marked client-bound. Target: added p50 <= 0.5 ms at concurrency 50.
Writes benchmarks/results/envoy_overhead.json. All traffic is on 127.0.0.1.
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
from typing import Any

from caravan.bench.results import SweepResult, read_json
from caravan.local.process import ChildProcess, caravan_argv
from caravan.local.supervisor import LocalPorts, LocalStack, StackOptions
from caravan.spec import parse_spec

MODEL = "overhead"
RESULTS = Path(__file__).parent / "results"
LAG_LIMIT_MS = 20.0  # caravan bench's own CPU-starvation threshold (LagThresholds.loop_ms)


def spec_dict() -> dict[str, Any]:
    return {"models": [{"name": MODEL, "engine": {"model": "sim/overhead"},
                        "replicas": {"min": 1, "initial": 1, "max": 1}}]}


def pin_all(pid: int, cpu: int | None) -> None:
    """Pin every thread of ``pid`` to ``cpu`` (no-op for None or when not allowed)."""
    if cpu is None:
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), {cpu})


def children() -> dict[str, int]:
    """PIDs of this process's children by role: envoy, replica, xds."""
    found: dict[str, int] = {}
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if stat[1] != me:
            continue
        for role in ("envoy", "replica", "xds"):
            if any(a.decode(errors="replace").endswith(role) for a in argv[:4]):
                found[role] = int(entry)
    return found


PLACEMENTS = ("client-alone", "envoy-alone")


def placement(name: str, cpus: list[int]) -> dict[str, int | None]:
    """Core of each part: client, envoy, replica, rest (xds + this supervisor)."""
    if len(cpus) < 2:
        return dict.fromkeys(("client", "envoy", "replica", "rest"))
    a, b = cpus[0], cpus[1]
    if name == "envoy-alone":
        return {"client": a, "envoy": b, "replica": a, "rest": a}
    return {"client": a, "envoy": b, "replica": b, "rest": b}


def load(url: str, shape: list[str], args: argparse.Namespace, cpu: int | None,
         tmp: Path) -> SweepResult:
    """Run ``caravan bench --no-stream`` in its own process pinned to ``cpu``."""
    out = Path(tempfile.mkdtemp(dir=tmp))
    argv = caravan_argv("bench", "--url", url, "--model", MODEL, "--no-stream", *shape,
                        "--input-tokens", "16", "--output-tokens", "2", "--seed", "3",
                        "--no-progress", "--no-plot", "--out", str(out))
    with ChildProcess("bench", argv, out / "bench.log") as proc:
        pin_all(proc.pid, cpu)  # before Python has started any thread
        assert proc.proc is not None
        code = proc.proc.wait(timeout=300)
    if code != 0:
        raise SystemExit(f"caravan bench exited {code}: {(out / 'bench.log').read_text()[-2000:]}")
    return read_json(out / "bench.json")


def level_figures(result: SweepResult) -> dict[str, dict[str, float]]:
    out = {}
    for lv in result.levels:
        s = lv.summary
        if s.error_count:
            raise SystemExit(f"{lv.level.label}: errors {s.errors}")
        out[lv.level.label] = {"p50_ms": s.e2e.median, "p99_ms": s.e2e.p99,
                               "req_per_s": s.request_throughput,
                               "client_loop_lag_p99_ms": lv.client.loop_p99_ms}
    return out


def summarize(rounds: list[dict[str, dict[str, dict[str, float]]]]) -> dict[str, Any]:
    """Medians over rounds per level: each arm's figures and the paired differences."""
    out: dict[str, Any] = {}
    for label in rounds[0]["direct"]:
        arms = {arm: {k: statistics.median(r[arm][label][k] for r in rounds)
                      for k in rounds[0][arm][label]} for arm in ("direct", "envoy")}
        paired = {f"added_{q}_ms": [r["envoy"][label][f"{q}_ms"] - r["direct"][label][f"{q}_ms"]
                                    for r in rounds] for q in ("p50", "p99")}
        ratios = {f"ratio_{q}": [r["envoy"][label][f"{q}_ms"] / r["direct"][label][f"{q}_ms"]
                                 for r in rounds] for q in ("p50", "p99")}
        lag = max(a["client_loop_lag_p99_ms"] for a in arms.values())
        out[label] = {**arms, **{k: statistics.median(v) for k, v in {**paired, **ratios}.items()},
                      "per_round_added_p50_ms": paired["added_p50_ms"],
                      "client_bound": lag > LAG_LIMIT_MS,
                      "closed_loop": label.startswith("c=")}
    return out


def measure(urls: dict[str, str], shapes: list[list[str]], args: argparse.Namespace,
            cores: dict[str, int | None], tmp: Path) -> dict[str, Any]:
    """Pin the parts as ``cores`` says, run the rounds, return medians and rounds."""
    pin_all(os.getpid(), cores["rest"])
    pids = children()
    for role in ("envoy", "replica", "xds"):
        pin_all(pids[role], cores["rest" if role == "xds" else role])
    rounds: list[dict[str, dict[str, dict[str, float]]]] = []
    for rnd in range(args.rounds):
        got: dict[str, dict[str, dict[str, float]]] = {"direct": {}, "envoy": {}}
        for arm in ("direct", "envoy") if rnd % 2 == 0 else ("envoy", "direct"):
            for shape in shapes:
                got[arm].update(level_figures(load(urls[arm], shape, args, cores["client"], tmp)))
            for label, f in got[arm].items():
                print(f"  round {rnd} {arm:6s} {label:18s} p50 {f['p50_ms']:7.3f} ms  p99 "
                      f"{f['p99_ms']:7.3f} ms  {f['req_per_s']:6.0f} req/s  client lag p99 "
                      f"{f['client_loop_lag_p99_ms']:5.1f} ms", flush=True)
        rounds.append(got)
    return {"cores": {k: str(v) for k, v in cores.items()}, "levels": summarize(rounds),
            "rounds": rounds}


def report(name: str, levels: dict[str, Any]) -> None:
    for label, r in levels.items():
        lag = max(r["direct"]["client_loop_lag_p99_ms"], r["envoy"]["client_loop_lag_p99_ms"])
        notes = [n for n, on in (("client-bound", r["client_bound"]),
                                 ("closed loop: throughput-bound", r["closed_loop"])) if on]
        print(f"{name} {label}: direct p50 {r['direct']['p50_ms']:.3f} p99 "
              f"{r['direct']['p99_ms']:.3f} ms, {r['direct']['req_per_s']:.0f} req/s | envoy p50 "
              f"{r['envoy']['p50_ms']:.3f} p99 {r['envoy']['p99_ms']:.3f} ms, "
              f"{r['envoy']['req_per_s']:.0f} req/s | added p50 {r['added_p50_ms']:+.3f} ms "
              f"({r['ratio_p50']:.2f}x), p99 {r['added_p99_ms']:+.3f} ms ({r['ratio_p99']:.2f}x)"
              f" | client lag p99 {lag:.1f} ms {'(' + '; '.join(notes) + ')' if notes else ''}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--placement", choices=("both", *PLACEMENTS), default="both")
    p.add_argument("--concurrency", default="8,50")
    p.add_argument("--requests", type=int, default=2000, help="per closed-loop level")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--rate", type=float, default=200.0, help="open-loop shape, req/s (0: off)")
    p.add_argument("--rate-requests", type=int, default=600)
    p.add_argument("--time-scale", type=float, default=0.0001)
    p.add_argument("--out", type=Path, default=RESULTS / "envoy_overhead.json")
    args = p.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    names = PLACEMENTS if args.placement == "both" else (args.placement,)
    shapes = [["--concurrency", args.concurrency, "--requests", str(args.requests),
               "--warmup", "50"]]
    if args.rate:
        shapes.append(["--rate", f"{args.rate:g}", "--poisson", "--max-concurrency", "50",
                       "--requests", str(args.rate_requests), "--warmup", "20"])
    spec = parse_spec(spec_dict(), "envoy_overhead")
    options = StackOptions(time_scale=args.time_scale, prometheus=False,
                           replica_args=("--stream-interval-ms", "0"))
    out: dict[str, Any] = {"config": {**{k: str(v) for k, v in vars(args).items()},
                                      "machine_cpus": str(len(cpus)), "mode": "unary",
                                      "python": sys.version.split()[0]}}
    with tempfile.TemporaryDirectory(prefix="caravan-overhead-") as tmp, \
            LocalStack(spec, Path(tmp), LocalPorts.free(), options) as stack:
        (replica,) = stack.replicas(MODEL)
        urls = {"direct": replica.endpoint, "envoy": stack.endpoint}
        for name in names:
            print(f"placement {name}")
            out[name] = measure(urls, shapes, args, placement(name, cpus), Path(tmp))
    for name in names:
        report(name, out[name]["levels"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
