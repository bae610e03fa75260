"""Latency Envoy adds: the same stream=false load straight at a replica and through Envoy.

    .venv/bin/python benchmarks/envoy_overhead.py [--service both|fixed-latency|instant]
                                                  [--placement all|envoy-with-client|envoy-alone|client-alone]

Starts the local stack (``LocalStack``: one replica, the real ``tritonserver`` with the
simulated vLLM engine; ``caravan xds --registry FILE``; real Envoy ``--concurrency 1``
with the bootstrap from ``caravan.render.envoy``; no Prometheus). The load generator is
``caravan bench --no-stream`` itself (one ``stream=false`` request per ModelStreamInfer
stream, one final response each), run as its own process (so this process's supervisor threads
never share its GIL), once per arm and round: closed-loop concurrency levels
(``--concurrency 8,50``) and an open-loop Poisson rate capped at 50 in flight
(``--rate``). Both arms send the same seeded requests (same prompts and ``max_tokens``
per request index) and, with ``--arms together`` (the default), run at the same time
(two ``caravan bench`` processes, one straight at the replica, one through Envoy), so
a slow spell of this shared machine hits both alike; ``--arms alternate`` runs them
one after the other, alternating the order per round.

Services (the replica behind both arms):

* ``fixed-latency`` (the target's figure): ``ReplicaOptions(fixed_ms_per_token=...)``,
  every answer after exactly ``--ms-per-token`` x its output tokens (tokens uniform in
  ``--output-tokens`` x [1 - spread, 1 + spread]: 10-190 ms by default), each request
  on its own. No batch steps to align with, so nothing hides the proxy's delay, and the
  spread keeps a closed loop from moving in lockstep bursts. At c=50 that is ~500
  req/s: no core saturates, so the difference is Envoy's path delay.
* ``instant``: the batching simulator at time scale 0.0001, answering at once. A
  closed loop then saturates the busiest core and latency there is concurrency /
  throughput (Little's law): the added p50 at c=50 measures how much Envoy's CPU
  lowers throughput on a shared 2-core box, not the proxy's path delay.

CPU placement (2 cores, 3 busy parts; ``os.sched_setaffinity`` on every thread; the
replica is tritonserver and its model's process):

* ``envoy-with-client``: client(s) and Envoy on core 0, replica (and the rest) on
  core 1: both arms cross cores exactly once each way, so the difference is Envoy's
  own work rather than an extra cross-core wake-up.
* ``envoy-alone``: Envoy has core 1 to itself (as in production, where it never
  shares with replicas); client and replica share core 0 (equally in both arms).
* ``client-alone``: the load client has core 0 to itself; replica, Envoy, control
  plane and this supervisor share core 1, so through Envoy the replica's core also
  runs Envoy (Envoy's CPU shows as latency).

Figures are medians over rounds (``--rounds``): each arm's p50/p99 and req/s; the
per-request added latency (the same request index through Envoy minus straight at the
replica; its p50 and p99: the headline figure, a paired comparison that does not
depend on which request happens to be the median); the difference of the arms' p50
and p99 and their ratios (envoy / direct). The
client's event-loop lag p99 is reported beside them; a level whose client lag p99
exceeds 20 ms is marked client-bound. Target: added p50 <= 0.5 ms at concurrency 50.
Writes benchmarks/results/envoy_overhead.json and docs/img/envoy-overhead.png
(``--replot`` redraws the PNG from the JSON without measuring). All traffic is on 127.0.0.1.
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
from caravan.bench.stats import percentile
from caravan.local.process import ChildProcess, caravan_argv, descendants
from caravan.local.supervisor import LocalPorts, LocalStack, StackOptions
from caravan.spec import parse_spec
from caravan.triton.launcher import ReplicaOptions

MODEL = "overhead"
RESULTS = Path(__file__).parent / "results"
TARGET_MS = 0.5  # issue 6: added p50 at concurrency 50, unary
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


def roles(stack: LocalStack) -> dict[str, list[int]]:
    """PIDs of the stack's parts by role: envoy, replica (with its model process), xds."""
    (replica,) = stack.replicas(MODEL)
    return {"envoy": [stack.infra("envoy").pid], "xds": [stack.infra("xds").pid],
            "replica": descendants(stack.replica_pid(replica.id))}


PLACEMENTS = ("envoy-with-client", "envoy-alone", "client-alone")
SERVICES = ("fixed-latency", "instant")


def service_options(service: str, args: argparse.Namespace) -> StackOptions:
    """fixed-latency: every answer after exactly ``--ms-per-token`` x its tokens (no
    batch steps, so nothing hides the proxy's delay; token counts vary, so a closed
    loop does not move in lockstep bursts); instant: the batching simulator at time
    scale 0.0001 (answers at once, so the closed loop saturates the CPU)."""
    fixed = args.ms_per_token if service == "fixed-latency" else None
    replica = ReplicaOptions(stream_interval_ms=0, fixed_ms_per_token=fixed)
    return StackOptions(time_scale=1.0 if service == "fixed-latency" else 0.0001,
                        prometheus=False, replica=replica)


def placement(name: str, cpus: list[int]) -> dict[str, int | None]:
    """Core of each part: client, envoy, replica, rest (xds + this supervisor)."""
    if len(cpus) < 2:
        return dict.fromkeys(("client", "envoy", "replica", "rest"))
    a, b = cpus[0], cpus[1]
    if name == "envoy-with-client":
        return {"client": a, "envoy": a, "replica": b, "rest": b}
    if name == "envoy-alone":
        return {"client": a, "envoy": b, "replica": a, "rest": a}
    return {"client": a, "envoy": b, "replica": b, "rest": b}


def load(urls: list[str], shape: list[str], args: argparse.Namespace, cpu: int | None,
         tmp: Path) -> list[SweepResult]:
    """Run ``caravan bench --no-stream`` once per URL, all at the same time, each in its
    own process pinned to ``cpu``; their results in the same order."""
    outs = [Path(tempfile.mkdtemp(dir=tmp)) for _ in urls]
    with contextlib.ExitStack() as stack:
        procs = []
        for url, out in zip(urls, outs, strict=True):
            argv = caravan_argv("bench", "--url", url, "--model", MODEL, "--no-stream", *shape,
                                "--input-tokens", "16", "--output-tokens", str(args.output_tokens),
                                "--output-spread", str(args.output_spread), "--seed", "3",
                                "--no-progress", "--no-plot", "--out", str(out))
            proc = stack.enter_context(ChildProcess("bench", argv, out / "bench.log"))
            pin_all(proc.pid, cpu)  # before Python has started any thread
            procs.append(proc)
        codes = [p.proc.wait(timeout=300) if p.proc is not None else -1 for p in procs]
    for code, out in zip(codes, outs, strict=True):
        if code != 0:
            raise SystemExit(f"caravan bench exited {code}: {(out / 'bench.log').read_text()[-2000:]}")
    return [read_json(out / "bench.json") for out in outs]


def level_figures(result: SweepResult, e2e: dict[str, dict[int, float]]
                  ) -> dict[str, dict[str, float]]:
    """Each level's summary figures; fills ``e2e[label][request index]`` (ms)."""
    out = {}
    for lv in result.levels:
        s = lv.summary
        if s.error_count:
            raise SystemExit(f"{lv.level.label}: errors {s.errors}")
        out[lv.level.label] = {"p50_ms": s.e2e.median, "p99_ms": s.e2e.p99,
                               "req_per_s": s.request_throughput,
                               "client_loop_lag_p99_ms": lv.client.loop_p99_ms}
        e2e[lv.level.label] = {r.index: r.e2e_ms for r in lv.records}
    return out


def paired(direct: dict[int, float], envoy: dict[int, float]) -> dict[str, float]:
    """Per-request added latency: the same seeded request (same index, prompt and
    max_tokens) through Envoy minus straight at the replica; its p50 and p99 in ms."""
    diffs = [envoy[i] - direct[i] for i in direct.keys() & envoy.keys()]
    return {"paired_added_p50_ms": percentile(diffs, 50), "paired_added_p99_ms": percentile(diffs, 99)}


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
        per_request = {k: statistics.median(r["paired"][label][k] for r in rounds)
                       for k in rounds[0]["paired"][label]}
        out[label] = {**arms, **{k: statistics.median(v) for k, v in {**paired, **ratios}.items()},
                      **per_request,
                      "per_round_added_p50_ms": paired["added_p50_ms"],
                      "client_bound": lag > LAG_LIMIT_MS,
                      "closed_loop": label.startswith("c=")}
    return out


def measure(urls: dict[str, str], shapes: list[list[str]], args: argparse.Namespace,
            cores: dict[str, int | None], tmp: Path, pids: dict[str, list[int]]) -> dict[str, Any]:
    """Pin the parts as ``cores`` says, run the rounds, return medians and rounds."""
    pin_all(os.getpid(), cores["rest"])
    for role in ("envoy", "replica", "xds"):
        for pid in pids[role]:
            pin_all(pid, cores["rest" if role == "xds" else role])
    rounds: list[dict[str, dict[str, dict[str, float]]]] = []
    for rnd in range(args.rounds):
        got: dict[str, dict[str, dict[str, float]]] = {"direct": {}, "envoy": {}}
        e2e: dict[str, dict[str, dict[int, float]]] = {"direct": {}, "envoy": {}}
        order = ["direct", "envoy"] if rnd % 2 == 0 else ["envoy", "direct"]
        batches = [order] if args.arms == "together" else [[arm] for arm in order]
        for arms in batches:
            for shape in shapes:
                results = load([urls[arm] for arm in arms], shape, args, cores["client"], tmp)
                for arm, result in zip(arms, results, strict=True):
                    got[arm].update(level_figures(result, e2e[arm]))
        for arm in order:
            for label, f in got[arm].items():
                print(f"  round {rnd} {arm:6s} {label:18s} p50 {f['p50_ms']:7.3f} ms  p99 "
                      f"{f['p99_ms']:7.3f} ms  {f['req_per_s']:6.0f} req/s  client lag p99 "
                      f"{f['client_loop_lag_p99_ms']:5.1f} ms", flush=True)
        got["paired"] = {label: paired(e2e["direct"][label], e2e["envoy"][label])
                         for label in e2e["direct"]}
        rounds.append(got)
    return {"cores": {k: str(v) for k, v in cores.items()}, "levels": summarize(rounds),
            "rounds": rounds}


def report(name: str, levels: dict[str, Any]) -> None:
    for label, r in levels.items():
        lag = max(r["direct"]["client_loop_lag_p99_ms"], r["envoy"]["client_loop_lag_p99_ms"])
        notes = [n for n, on in (("client-bound", r["client_bound"]),
                                 ("closed loop", r["closed_loop"])) if on]
        print(f"{name} {label}: added per request p50 {r['paired_added_p50_ms']:+.3f} ms, p99 "
              f"{r['paired_added_p99_ms']:+.3f} ms | direct p50 {r['direct']['p50_ms']:.3f} p99 "
              f"{r['direct']['p99_ms']:.3f} ms, {r['direct']['req_per_s']:.0f} req/s | envoy p50 "
              f"{r['envoy']['p50_ms']:.3f} p99 {r['envoy']['p99_ms']:.3f} ms, "
              f"{r['envoy']['req_per_s']:.0f} req/s | p50 diff {r['added_p50_ms']:+.3f} ms "
              f"({r['ratio_p50']:.2f}x), p99 diff {r['added_p99_ms']:+.3f} ms ({r['ratio_p99']:.2f}x)"
              f" | client lag p99 {lag:.1f} ms {'(' + '; '.join(notes) + ')' if notes else ''}")


def plot(out: dict[str, Any], path: Path) -> Path:
    """Bars per service: per-request added p50 by level and placement (dots: the
    difference of the arms' p50s), with the 0.5 ms target as a dashed line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    services = [svc for svc in SERVICES if svc in out]
    fig = Figure(figsize=(5.5 * len(services), 4.2), layout="constrained")
    axes = fig.subplots(1, len(services), squeeze=False)[0]
    for ax, svc in zip(axes, services, strict=True):
        names = [n for n in PLACEMENTS if n in out[svc]]
        labels = list(out[svc][names[0]]["levels"])
        width = 0.8 / len(names)
        for k, name in enumerate(names):
            levels = out[svc][name]["levels"]
            xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(labels))]
            bars = ax.bar(xs, [levels[lb]["paired_added_p50_ms"] for lb in labels], width,
                          label=name)
            ax.plot(xs, [levels[lb]["added_p50_ms"] for lb in labels], "o", color="black",
                    markersize=3, label="p50 envoy - direct" if k == 0 else None)
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.axhline(TARGET_MS, linestyle="--", color="red", linewidth=1, label="target 0.5 ms")
        ax.set_xticks(range(len(labels)), labels)
        ax.set_ylabel("added latency, per-request p50 (ms)")
        ax.set_title(f"{svc} replica")
        ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--placement", choices=("all", *PLACEMENTS), default="all")
    p.add_argument("--concurrency", default="8,50")
    p.add_argument("--requests", type=int, default=2000, help="per closed-loop level")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--arms", choices=("together", "alternate"), default="together",
                   help="together: direct and envoy load run at the same time (a slow spell "
                        "of the machine hits both); alternate: one after the other")
    p.add_argument("--rate", type=float, default=200.0, help="open-loop shape, req/s (0: off)")
    p.add_argument("--rate-requests", type=int, default=600)
    p.add_argument("--service", choices=("both", *SERVICES), default="both",
                   help="fixed-latency: the replica answers after --ms-per-token x tokens; "
                        "instant: at once")
    p.add_argument("--ms-per-token", type=float, default=5.0, help="fixed-latency service time")
    p.add_argument("--output-tokens", type=int, default=20, help="mean tokens per answer")
    p.add_argument("--output-spread", type=float, default=0.9,
                   help="tokens uniform in mean x [1 - spread, 1 + spread]")
    p.add_argument("--out", type=Path, default=RESULTS / "envoy_overhead.json")
    p.add_argument("--png", type=Path,
                   default=Path(__file__).parent.parent / "docs" / "img" / "envoy-overhead.png")
    p.add_argument("--replot", action="store_true",
                   help="measure nothing: redraw the PNG from the JSON at --out")
    args = p.parse_args()
    png = args.png
    if args.replot:
        print(f"wrote {plot(json.loads(args.out.read_text()), png)}")
        return
    cpus = sorted(os.sched_getaffinity(0))
    names = PLACEMENTS if args.placement == "all" else (args.placement,)
    services = tuple(SERVICES) if args.service == "both" else (args.service,)
    shapes = [["--concurrency", args.concurrency, "--requests", str(args.requests),
               "--warmup", "50"]]
    if args.rate:
        shapes.append(["--rate", f"{args.rate:g}", "--poisson", "--max-concurrency", "50",
                       "--requests", str(args.rate_requests), "--warmup", "20"])
    spec = parse_spec(spec_dict(), "envoy_overhead")
    out: dict[str, Any] = {"config": {**{k: str(v) for k, v in vars(args).items()},
                                      "machine_cpus": str(len(cpus)), "mode": "no-stream",
                                      "python": sys.version.split()[0]}}
    for service in services:
        options = service_options(service, args)
        with tempfile.TemporaryDirectory(prefix="caravan-overhead-") as tmp, \
                LocalStack(spec, Path(tmp), LocalPorts.free(), options) as stack:
            (replica,) = stack.replicas(MODEL)
            urls = {"direct": replica.endpoint, "envoy": stack.endpoint}
            out[service] = {}
            for name in names:
                print(f"service {service}, placement {name}")
                out[service][name] = measure(urls, shapes, args, placement(name, cpus), Path(tmp),
                                             roles(stack))
    for service in services:
        for name in names:
            report(f"{service} {name}", out[service][name]["levels"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out} and {plot(out, png)}")


if __name__ == "__main__":
    main()
