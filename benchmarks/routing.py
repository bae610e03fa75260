"""What each routing policy buys: the same seeded workloads through the real Envoy to
real tritonserver replicas (simulated engine with prefix caching), one policy at a time.

    .venv/bin/python benchmarks/routing.py [--replicas 8] [--concurrency 64,128,256]
        [--workloads multi-turn,shared-prefix,unique] [--policies round_robin,...]

Per policy, a fresh stack (so no policy inherits another's warm caches): ``--replicas``
replicas of one model (``caravan.local.launch``: real tritonserver 2.51, Caravan's
simulated vLLM engine, prefix caching on, ``--time-scale`` of simulated time),
``caravan xds --registry`` with a spec whose ``routing.policy`` is the policy, and the
real Envoy. For each workload and concurrency, ``caravan bench`` (its own process) sends
the same seeded requests (``caravan.bench.workloads``; ``--seed``) at fixed concurrency;
multi-turn sends turn t of a conversation after turn t-1 finished, no session header.

Figures per (workload, concurrency, policy): mean / p50 / p99 TTFT and end-to-end
latency (ms, wall clock; simulated durations are these divided by ``--time-scale``
-- the JSON and the table give simulated-time ms), requests/s and output tokens/s
(wall clock, so multiply by ``--time-scale`` for simulated-time rates), the
prefix-cache hit rate (vLLM's ``prefix_cache_hits / prefix_cache_queries`` summed over
the replicas' metrics, in tokens), load imbalance (max / mean requests per replica, every
replica counted) and failed requests; and each figure's ratio to ``round_robin``.

A policy may carry a load bound, ``prefix@125``: ``routing.hash_balance_factor`` 125
(``@off``: none; without ``@``: the spec default), so bounds compare in one run.
``--repeats N`` runs every policy N times, each on a fresh stack, the policies
interleaved (repeat 1 of each, then repeat 2, ...) so the box's drift hits them alike;
the tables give each figure's mean over the repeats, the JSON also every repeat's
figures (``repeats``) and the spread of the main ones is printed (an A/A check).

Writes benchmarks/results/routing.json and docs/img/routing.png (mean TTFT and
requests/s by policy and concurrency, one row per workload; with ``--out X.json``: X.json
and X.png); ``--replot`` redraws the PNG from the JSON, ``--table`` prints the markdown
tables. Everything on 127.0.0.1; every level is bounded in requests and time.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from caravan.bench.results import read_json
from caravan.discovery.registry_file import write_registry
from caravan.local.launch import Launcher, RunningReplica, serving_hosts, wait_until
from caravan.local.process import ChildProcess, caravan_argv, free_port
from caravan.spec import ENGINE_PROFILES, PlatformSpec, parse_spec
from caravan.triton.launcher import ReplicaOptions

MODEL = "llm"
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "routing.json"
PNG = ROOT / "docs" / "img" / "routing.png"
POLICIES = ("round_robin", "least_request", "session", "prefix")
WORKLOADS = ("multi-turn", "shared-prefix", "unique")
HIT = re.compile(r"^vllm:prefix_cache_(hits|queries)_total\{[^}]*\} ([0-9.e+]+)$", re.M)
LEVEL_GRACE_S = 300  # beyond --level-s: the bench process's own end (drain, JSON)
# Saturation is what is measured: Envoy's hung-replica cut-offs (a first response within
# 5 s, silence under 10 s by default) would end the slowest requests of a saturated
# round robin and retry them elsewhere, so they are set far above any latency here.
NO_CUTOFF = {"per_try_timeout_s": 120.0, "stream_idle_timeout_s": 240.0, "max_stream_duration_s": 600.0}


def policy_routing(label: str) -> dict[str, Any]:
    """``routing`` fields of a policy label: ``prefix``, ``prefix@125``
    (hash_balance_factor 125), ``prefix@off`` (no bound). ValueError on a bad bound."""
    policy, _, bound = label.partition("@")
    out: dict[str, Any] = {"policy": policy}
    if bound:
        out["hash_balance_factor"] = None if bound == "off" else int(bound)
    return out


def spec_for(label: str, args: argparse.Namespace) -> PlatformSpec:
    """One model routed as the policy label says (``policy_routing``; Maglev table
    small: 8 replicas; no retries and no hung-replica cut-offs, see ``NO_CUTOFF``); the
    engine's costs are ``--engine-profile``'s unless ``--kv-cache-tokens`` /
    ``--max-num-batched-tokens`` override them."""
    kv = {} if args.kv_cache_tokens is None else {"kv_cache_tokens": args.kv_cache_tokens}
    budget = ({} if args.max_num_batched_tokens is None
              else {"max_num_batched_tokens": args.max_num_batched_tokens})
    return parse_spec({
        "models": [{"name": MODEL, "engine": {"model": "simulated", "max_model_len": 16384,
                                              **budget},
                    "simulator": {"profile": args.engine_profile, **kv},
                    "routing": {**policy_routing(label), "prefix_tokens": args.prefix_tokens,
                                "maglev_table_size": 1031, "retries": 0, **NO_CUTOFF}}],
        "envoy": {"listen_port": free_port(), "admin_port": free_port()},
        "control_plane": {"xds_port": free_port(), "admin_port": free_port(),
                          "debounce_quiet_ms": 20, "debounce_max_ms": 200},
    })


def cache_counters(replicas: list[RunningReplica]) -> dict[str, float]:
    """vLLM's prefix-cache hits and queries (tokens), summed over ``replicas``."""
    out = {"hits": 0.0, "queries": 0.0}
    for r in replicas:
        with urllib.request.urlopen(f"http://127.0.0.1:{r.metrics_port}/metrics", timeout=5) as resp:
            for kind, value in HIT.findall(resp.read().decode()):
                out[kind] += float(value)
    return out


def start_stack(launch: Launcher, spec: PlatformSpec, args: argparse.Namespace
                ) -> tuple[list[RunningReplica], str]:
    """Replicas, control plane and Envoy for ``spec``; returns (replicas, Envoy URL)."""
    options = ReplicaOptions(time_scale=args.time_scale, stream_interval_ms=args.stream_interval_ms,
                             exit_timeout_s=5)
    model = spec.model(MODEL)
    replicas = launch.replicas([f"r{i}" for i in range(args.replicas)], model, options)
    registry = launch.state_dir / "registry.json"
    write_registry(registry, [r.registration() for r in replicas])
    spec_path = launch.state_dir / "platform.yaml"
    spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    cp = spec.control_plane
    launch.control_plane(spec_path, port=cp.xds_port, admin_port=cp.admin_port, registry=registry, ready=True)
    launch.envoy(spec, [("127.0.0.1", cp.xds_port)])
    want = {r.endpoint for r in replicas}
    wait_until(lambda: serving_hosts(spec.envoy.admin_port, model.cluster_name) == want, 60,
               "every replica healthy in Envoy")
    return replicas, f"127.0.0.1:{spec.envoy.listen_port}"


def workload_args(workload: str, concurrency: int, args: argparse.Namespace) -> list[str]:
    """``caravan bench`` options of one workload."""
    common = ["--workload", workload, "--output-tokens", str(args.output_tokens), "--output-spread", "0.5"]
    if workload == "multi-turn":
        return [*common, "--input-tokens", str(args.turn_tokens), "--input-spread", "0.5",
                "--conversations", str(concurrency), "--turns-mean", str(args.turns_mean),
                "--turns-max", str(args.turns_max)]
    if workload == "shared-prefix":
        return [*common, "--input-tokens", "64", "--prefixes", str(args.prefixes),
                "--prefix-tokens", str(args.shared_tokens)]
    return [*common, "--input-tokens", str(args.unique_tokens), "--input-spread", "0.5"]


def level_requests(workload: str, concurrency: int, args: argparse.Namespace) -> int:
    """Measured requests of a level: ``--requests``, and for multi-turn at least
    ``--rounds`` x concurrency x mean turns, so most conversations reach their later turns
    (a level of first turns only would measure cold caches); for shared-prefix at least
    5 x the documents, so each document is asked about several times."""
    if workload == "shared-prefix":
        return max(int(args.requests), 5 * int(args.prefixes))
    if workload != "multi-turn":
        return int(args.requests)
    return max(int(args.requests), round(args.rounds * concurrency * args.turns_mean))


def run_level(url: str, workload: str, concurrency: int, args: argparse.Namespace, out: Path
              ) -> dict[str, Any]:
    """One ``caravan bench`` level in its own process; its first level's JSON. Seed
    ``--seed`` + concurrency: every policy gets the same requests at a level, and no
    level repeats another's prompts (each ``caravan bench`` run is its own level 0)."""
    out.mkdir(parents=True, exist_ok=True)
    argv = caravan_argv("bench", "--url", url, "--model", MODEL, "--concurrency", str(concurrency),
                        "--requests", str(level_requests(workload, concurrency, args)),
                        "--seed", str(args.seed + concurrency),
                        "--duration", str(args.level_s), "--timeout", "300",
                        *workload_args(workload, concurrency, args),
                        "--no-progress", "--no-plot", "--out", str(out))
    with ChildProcess("bench", argv, out / "bench.log") as proc:
        code = proc.proc.wait(timeout=args.level_s + LEVEL_GRACE_S) if proc.proc is not None else -1
    if code != 0:
        raise SystemExit(f"caravan bench exited {code}: {(out / 'bench.log').read_text()[-2000:]}")
    (level,) = read_json(out / "bench.json").levels
    return {"level": level}


def figures(level: Any, endpoints: list[str], hits: dict[str, float], time_scale: float
            ) -> dict[str, float]:
    """The figures of one level (latencies in simulated ms, rates in simulated seconds)."""
    s = level.summary
    per = {e: 0 for e in endpoints}
    for r in level.records:
        if r.replica_id in per:
            per[r.replica_id] += 1
    mean = sum(per.values()) / len(per)
    return {
        "requests": s.requests, "failed": s.error_count,
        "ttft_mean_ms": s.ttft.mean / time_scale, "ttft_p50_ms": s.ttft.median / time_scale,
        "ttft_p99_ms": s.ttft.p99 / time_scale,
        "e2e_mean_ms": s.e2e.mean / time_scale, "e2e_p50_ms": s.e2e.median / time_scale,
        "e2e_p99_ms": s.e2e.p99 / time_scale,
        "req_per_s": s.request_throughput * time_scale,
        "output_tok_per_s": s.output_token_throughput * time_scale,
        "hit_rate": hits["hits"] / hits["queries"] if hits["queries"] else 0.0,
        "imbalance": max(per.values()) / mean if mean else 0.0,
        "client_loop_lag_p99_ms": level.client.loop_p99_ms,
    }


def run_policy(policy: str, args: argparse.Namespace, tmp: Path) -> dict[str, dict[str, Any]]:
    """Every (workload, concurrency) under the policy label ``policy`` on a fresh stack
    whose files go under the new directory ``tmp``."""
    out: dict[str, dict[str, Any]] = {}
    with Launcher(tmp) as launch:
        replicas, url = start_stack(launch, spec_for(policy, args), args)
        endpoints = [r.endpoint for r in replicas]
        for workload in args.workloads:
            for c in args.concurrency:
                before = cache_counters(replicas)
                level = run_level(url, workload, c, args, tmp / f"{workload}-c{c}")["level"]
                after = cache_counters(replicas)
                delta = {k: after[k] - before[k] for k in after}
                fig = figures(level, endpoints, delta, args.time_scale)
                out.setdefault(workload, {})[str(c)] = fig
                print(f"{policy:13s} {workload:13s} c={c:<4d} " + " ".join(
                    f"{k}={v:.3g}" for k, v in fig.items()), flush=True)
    return out


def mean_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's mean over the repeats of one policy (same workloads and levels)."""
    out: dict[str, Any] = {}
    for workload, by_c in runs[0].items():
        for c, fig in by_c.items():
            out.setdefault(workload, {})[c] = {
                k: sum(run[workload][c][k] for run in runs) / len(runs) for k in fig}
    return out


SPREAD_KEYS = ("ttft_mean_ms", "ttft_p50_ms", "req_per_s", "imbalance")


def print_spread(data: dict[str, Any]) -> None:
    """Every repeat's main figures per (workload, concurrency, policy), and their spread
    ((max - min) / mean): what the box's run-to-run noise is on the same requests."""
    for policy, runs in data["repeats"].items():
        for workload, by_c in runs[0].items():
            for c in by_c:
                cells = []
                for k in SPREAD_KEYS:
                    vals = [run[workload][c][k] for run in runs]
                    mean = sum(vals) / len(vals)
                    spread = (max(vals) - min(vals)) / mean if mean else 0.0
                    cells.append(f"{k} " + "/".join(f"{v:.3g}" for v in vals) + f" ({spread:.1%})")
                print(f"{policy:16s} {workload:13s} c={c:<4s} " + "  ".join(cells))


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    """Each figure divided by round_robin's for the same workload and concurrency."""
    base = results.get("round_robin", {})
    out: dict[str, Any] = {}
    for policy, by_workload in results.items():
        for workload, by_c in by_workload.items():
            for c, fig in by_c.items():
                ref = base.get(workload, {}).get(c)
                if ref is None:
                    continue
                out.setdefault(policy, {}).setdefault(workload, {})[c] = {
                    k: (v / ref[k] if ref[k] else None) for k, v in fig.items()
                    if k not in ("requests", "failed", "client_loop_lag_p99_ms")}
    return out


def merge(parts: list[dict[str, Any]], names: str) -> dict[str, Any]:
    """One result document from several runs (``--merge``): each (policy, workload,
    concurrency) from the last run that has it; ``args`` lists every policy, workload and
    concurrency; ``runs`` keeps each run's own args and label."""
    results: dict[str, Any] = {}
    for part in parts:
        for policy, by_workload in part["results"].items():
            for workload, by_c in by_workload.items():
                results.setdefault(policy, {}).setdefault(workload, {}).update(by_c)
    args = dict(parts[0]["args"])
    for key in ("policies", "workloads", "concurrency"):
        args[key] = list(dict.fromkeys(x for part in parts for x in part["args"][key]))
    return {"args": args, "label": parts[0]["label"], "merged_from": names.split(","),
            "runs": [{"args": part["args"], "wall_s": part["wall_s"]} for part in parts],
            "wall_s": sum(part["wall_s"] for part in parts), "results": results,
            "ratio_to_round_robin": ratios(results)}


def plot(data: dict[str, Any], path: Path) -> None:
    """Mean TTFT and requests/s against concurrency, a line per policy, a row per workload."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    results = data["results"]
    workloads = data["args"]["workloads"]
    fig = Figure(figsize=(10, 3.2 * len(workloads)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(workloads), 2, squeeze=False)
    for row, workload in enumerate(workloads):
        for col, (key, title) in enumerate((("ttft_mean_ms", "mean TTFT (ms, simulated)"),
                                            ("req_per_s", "requests/s (simulated)"))):
            ax = axes[row][col]
            for policy, by_workload in results.items():
                pts = sorted((int(c), f[key]) for c, f in by_workload.get(workload, {}).items())
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=policy)
            ax.set_title(f"{workload}: {title}", fontsize=10)
            ax.set_xlabel("concurrency")
            ax.grid(alpha=0.3)
            if key == "ttft_mean_ms":
                ax.set_yscale("log")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{data['args']['replicas']} simulated-engine replicas behind the real Envoy and "
                 "real Triton frontends", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def plot_bars(parts: list[dict[str, Any]], path: Path) -> None:
    """Mean TTFT and requests/s per policy, a group of bars per run (each labelled by its
    engine profile, workload and concurrency): for runs at a single concurrency."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 + 1.9 * len(parts), 3.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    policies = list(dict.fromkeys(p for part in parts for p in part["results"]))
    width = 0.8 / len(policies)
    for col, (key, title) in enumerate((("ttft_mean_ms", "mean TTFT (ms, simulated)"),
                                        ("req_per_s", "requests/s (simulated)"))):
        ax = axes[col]
        for i, policy in enumerate(policies):
            xs, ys = [], []
            for g, part in enumerate(parts):
                for by_c in part["results"].get(policy, {}).values():
                    for fig_c in by_c.values():
                        xs.append(g + (i - (len(policies) - 1) / 2) * width)
                        ys.append(fig_c[key])
            ax.bar(xs, ys, width, label=policy)
        ax.set_xticks(range(len(parts)), [run_label(part) for part in parts], fontsize=7)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.suptitle("8 simulated-engine replicas behind the real Envoy and real Triton frontends",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def run_label(part: dict[str, Any]) -> str:
    """``l4 multi-turn`` over ``c=600, 59,031 req``: what a run was (profile, workloads,
    concurrency, measured requests per level)."""
    a = part["args"]
    return (f"{a.get('engine_profile', 'h100')} {'+'.join(a['workloads'])}\n"
            f"c={','.join(str(c) for c in a['concurrency'])}, {int(a['requests']):,} req")


TABLE_COLUMNS = (("ttft_mean_ms", "TTFT mean ms", "{:.0f}"), ("ttft_p50_ms", "p50", "{:.0f}"),
                 ("ttft_p99_ms", "p99", "{:.0f}"), ("e2e_mean_ms", "e2e mean ms", "{:.0f}"),
                 ("e2e_p50_ms", "p50", "{:.0f}"), ("e2e_p99_ms", "p99", "{:.0f}"),
                 ("req_per_s", "req/s", "{:.1f}"), ("output_tok_per_s", "out tok/s", "{:.0f}"),
                 ("hit_rate", "hit rate", "{:.0%}"), ("imbalance", "max/mean", "{:.2f}"),
                 ("failed", "failed", "{:d}"))
RATIO_KEYS = ("ttft_mean_ms", "req_per_s", "output_tok_per_s")


def table(data: dict[str, Any], workload: str, concurrency: str) -> str:
    """Markdown table of one (workload, concurrency): every policy's figures and its
    ratio to round robin for mean TTFT, req/s and output tok/s."""
    head = ["policy", *(c[1] for c in TABLE_COLUMNS), *(f"{k} / rr" for k in ("TTFT", "req/s", "tok/s"))]
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for policy, by_workload in data["results"].items():
        fig = by_workload.get(workload, {}).get(concurrency)
        if fig is None:
            continue
        ratio = data["ratio_to_round_robin"].get(policy, {}).get(workload, {}).get(concurrency, {})
        cells = [fmt.format(int(fig[k]) if k == "failed" else fig[k]) for k, _, fmt in TABLE_COLUMNS]
        cells += [f"{ratio[k]:.2f}x" if ratio.get(k) else "-" for k in RATIO_KEYS]
        rows.append(f"| {policy} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def print_tables(data: dict[str, Any]) -> None:
    for workload in data["args"]["workloads"]:
        for c in data["args"]["concurrency"]:
            print(f"\n{workload}, concurrency {c}:\n")
            print(table(data, workload, str(c)))


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--replicas", type=int, default=8)
    p.add_argument("--policies", default=",".join(POLICIES),
                   help="policy labels; prefix@125: hash_balance_factor 125, @off: no bound")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs of every policy, interleaved, each on a fresh stack (tables: means)")
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--concurrency", default="64,128,256")
    p.add_argument("--requests", type=int, default=400, help="measured requests per level")
    p.add_argument("--level-s", type=float, default=240.0, help="bound on each level, s")
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--stream-interval-ms", type=float, default=200.0)
    p.add_argument("--output-tokens", type=int, default=64, help="mean max_tokens (+-50 %%)")
    p.add_argument("--turn-tokens", type=int, default=150, help="multi-turn: words per user message")
    p.add_argument("--turns-mean", type=float, default=8.0,
                   help="multi-turn: mean turns (8: KubeAI's threads of >= 16 messages)")
    p.add_argument("--turns-max", type=int, default=16)
    p.add_argument("--rounds", type=float, default=1.5,
                   help="multi-turn: measured requests >= rounds x concurrency x turns-mean")
    p.add_argument("--shared-tokens", type=int, default=2048, help="shared-prefix: words per document")
    p.add_argument("--prefixes", type=int, default=150, help="shared-prefix: documents (llm-d's 150 tenants)")
    p.add_argument("--unique-tokens", type=int, default=1024)
    p.add_argument("--prefix-tokens", type=int, default=None, help="routing.prefix_tokens (spec default)")
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--engine-profile", choices=sorted(ENGINE_PROFILES), default="h100",
                   help="simulated GPU (caravan.spec.ENGINE_PROFILES; l4: KubeAI's)")
    p.add_argument("--kv-cache-tokens", type=int, default=None,
                   help="KV budget per replica (default: the profile's)")
    p.add_argument("--max-num-batched-tokens", type=int, default=None,
                   help="engine per-step token budget (default: the spec's, 8192; KubeAI: 16384)")
    p.add_argument("--merge", default="", help="A.json,B.json: one JSON (--out) and plot from "
                   "runs of other policies or workloads (each run's own args kept under 'runs')")
    p.add_argument("--bars", default="", help="A.json,B.json: a bar plot (PNG at --out) of runs "
                   "at one concurrency each, a group per run")
    p.add_argument("--replot", action="store_true", help="redraw the PNG from the JSON")
    p.add_argument("--table", action="store_true", help="print the markdown tables from the JSON")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    args.policies = args.policies.split(",")
    args.workloads = args.workloads.split(",")
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if args.prefix_tokens is None:
        from caravan.spec.models import DEFAULT_PREFIX_TOKENS

        args.prefix_tokens = DEFAULT_PREFIX_TOKENS
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    png = PNG if args.out == RESULTS else args.out.with_suffix(".png")
    if args.bars:
        plot_bars([json.loads(Path(f).read_text()) for f in args.bars.split(",")], args.out)
        print(f"wrote {args.out}")
        return
    if args.merge:
        data = merge([json.loads(Path(f).read_text()) for f in args.merge.split(",")], args.merge)
        args.out.write_text(json.dumps(data, indent=1) + "\n")
        plot(data, png)
        print(f"wrote {args.out} and {png}")
    if args.replot or args.table or args.merge:
        data = json.loads(args.out.read_text())
        if args.replot:
            plot(data, png)
        else:
            print_tables(data)
            if "repeats" in data:
                print_spread(data)
        return
    for policy in args.policies:
        spec_for(policy, args)  # a bad label or bound fails now, not after the first stacks
    started = time.time()
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in args.policies}
    with tempfile.TemporaryDirectory(prefix="caravan-routing-") as tmp:
        for repeat in range(args.repeats):
            for policy in args.policies:
                runs[policy].append(run_policy(policy, args, Path(tmp) / f"{policy}-{repeat}"))
    results = {p: mean_of(r) for p, r in runs.items()}
    data = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "label": "simulated engines (Caravan's vLLM simulator in real tritonserver 2.51) behind the "
                     "real Envoy 1.40; latencies and rates in simulated time",
            "wall_s": time.time() - started, "results": results, "ratio_to_round_robin": ratios(results)}
    if args.repeats > 1:
        data["repeats"] = runs
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    plot(data, png)
    print_tables(data)
    if args.repeats > 1:
        print_spread(data)
    print(f"wrote {args.out} and {png} in {data['wall_s']:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
