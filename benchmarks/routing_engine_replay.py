"""Multi-turn routing on the pure simulated engines only (no Envoy, no Triton): round
robin vs conversations kept on one replica, in simulated time. Separates the engine's
model from the stack's noise for docs/routing.md.

    .venv/bin/python benchmarks/routing_engine_replay.py [--budgets 0,8192,2048]
        [--kv-cache-tokens 200000,47000] [--engine-profile h100|l4]
        [--concurrency 256[,600,...]] [--requests 2048] [--window second-half|all]

``--replicas`` ``caravan.simulator.engine.Engine``s with ``--engine-profile``'s costs
(``caravan.spec.ENGINE_PROFILES``; ``--budgets`` 0 means no per-step budget; every
(concurrency, KV, budget) combination is one case), ``--concurrency`` conversations
from ``caravan.bench.workloads`` (multi-turn, the shapes of ``benchmarks/routing.py``:
``--turn-tokens``-word messages and ``--output-tokens`` answers, +-50 %, turns
1 + geometric with mean ``--turns-mean``, at most ``--turns-max``), closed loop in
simulated time: a conversation's next turn is sent when its previous one finishes.
``round_robin`` sends request i to replica i mod N; ``pinned`` sends every turn of
conversation c to replica c mod N (what ``prefix`` aims at, without its load bound).
Figures over the second half of ``--requests`` finished requests (``--window all``:
every request, as ``benchmarks/routing.py`` measures): mean TTFT (ms), requests/s,
prefix-cache hit rate (tokens, all requests); also p50 / p99 TTFT and, for the KV
trap round robin falls into past saturation, the share of simulated time some replica
had >= 95 % of its KV budget held with requests waiting (``kv_full_share``) and the busiest
replica's peak of requests in it (``peak_replica_in_flight``, running + waiting).

How firm a figure is: ``--seeds 10-24`` runs every case once per workload seed (a list
or a range); ``--jitter-ms J --repeats R`` sends each next turn a uniform 0-J simulated
ms after its previous one ended, the jitter drawn from seed r for repeat r (the same
requests, timings perturbed as the real stack's own noise perturbs them). With more
than one run per case each figure's mean, min and max over the runs is printed and
written (``spread``), every run's figures too (``runs``). Past round robin's saturation
point its mean TTFT is a tail figure (one replica whose KV budget fills stops hitting
its cache, serves slower than round robin feeds it, and gathers a growing share of the
requests in flight) and varies from run to run by a factor of ~2; p50 does not.

Deterministic (seeded); prints a line per run, writes ``--out`` (default
benchmarks/results/routing_engine_replay.json). Seconds per run (a minute for 59,031
requests at 1,200 conversations).
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import random
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from caravan.bench.dataset import Lengths
from caravan.bench.stats import percentile
from caravan.bench.workloads import BenchRequest, Kind, WorkloadSpec, make_workload, simulated_answer
from caravan.simulator.engine import Engine, EngineConfig, SeqRequest
from caravan.simulator.kvcache import BLOCK_SIZE, block_hashes
from caravan.simulator.textgen import token_ids
from caravan.spec import ENGINE_PROFILES, EngineArgs, SimulatorParams

RESULTS = Path(__file__).parent / "results" / "routing_engine_replay.json"
MAX_MODEL_LEN = 16384  # as benchmarks/routing.py's spec
NO_BUDGET = 10**6  # "no budget": more than any step here schedules
KV_FULL = 0.95  # a replica with requests waiting and this share of its KV blocks held is KV-bound


def conversations(args: argparse.Namespace, seed: int) -> list[Iterator[BenchRequest]]:
    """One endless multi-turn stream per conversation slot."""
    spec = WorkloadSpec(kind=Kind.MULTI_TURN, input=Lengths(args.turn_tokens, 0.5),
                        output=Lengths(args.output_tokens, 0.5),
                        conversations=1, turns_mean=args.turns_mean, turns_max=args.turns_max,
                        max_context=MAX_MODEL_LEN)
    return [make_workload(spec, seed, stream=i) for i in range(args.concurrency)]


def seq_request(rid: str, req: BenchRequest, now_ms: float) -> SeqRequest:
    """The engine request the simulated Triton model would make (prompt + answer hashed)."""
    words = req.prompt.split()
    seq = words + list(simulated_answer(req.prompt, req.max_tokens))
    return SeqRequest(rid, len(words), req.max_tokens, now_ms, block_hashes(token_ids(seq)))


class Replicas:
    """The engines and what the KV-trap figures need, sampled at every event."""

    def __init__(self, cfg: EngineConfig, n: int) -> None:
        self.engines = [Engine(cfg) for _ in range(n)]
        self.capacity = cfg.num_blocks * BLOCK_SIZE
        self.kv_full_ms = 0.0
        self.peak_in_flight = 0
        self._last_ms = 0.0

    def next_ms(self) -> float | None:
        times = [t for t in (e.next_event_ms() for e in self.engines) if t is not None]
        return min(times) if times else None

    def sample(self, now: float) -> None:
        """Account the time since the last sample to the state seen now."""
        stats = [e.stats() for e in self.engines]
        if any(s.waiting and s.kv_reserved_tokens >= KV_FULL * self.capacity for s in stats):
            self.kv_full_ms += now - self._last_ms
        self.peak_in_flight = max(self.peak_in_flight, *(s.running + s.waiting for s in stats))
        self._last_ms = now


def run_case(args: argparse.Namespace, policy: str, budget: int, kv: int, seed: int,
             jitter_seed: int = 0) -> dict[str, Any]:
    """One closed-loop run; returns its figures."""
    sim = SimulatorParams(profile=args.engine_profile, kv_cache_tokens=kv)
    engine = EngineArgs(model="simulated", max_model_len=MAX_MODEL_LEN,
                        max_num_batched_tokens=budget or NO_BUDGET)
    reps = Replicas(EngineConfig.from_spec(sim, engine), args.replicas)
    engines = reps.engines
    streams = conversations(args, seed + args.concurrency)
    counter = itertools.count()
    sent_at: dict[str, tuple[int, float]] = {}
    jitter = random.Random(jitter_seed)
    later: list[tuple[float, int]] = []  # (send time, slot) of turns delayed by --jitter-ms

    def send(slot: int, now: float) -> None:
        i = next(counter)
        replica = i % args.replicas if policy == "round_robin" else slot % args.replicas
        rid = f"{slot}-{i}"
        engines[replica].submit(seq_request(rid, next(streams[slot]), now))
        sent_at[rid] = (slot, now)

    def after(slot: int, now: float) -> None:
        if args.jitter_ms > 0:
            heapq.heappush(later, (now + jitter.uniform(0.0, args.jitter_ms), slot))
        else:
            send(slot, now)

    for slot in range(args.concurrency):
        send(slot, 0.0)
    firsts: list[tuple[float, float]] = []
    done: list[float] = []
    while len(done) < args.requests:
        now = min(t for t in (reps.next_ms(), later[0][0] if later else None) if t is not None)
        while later and later[0][0] <= now:
            send(heapq.heappop(later)[1], now)
        for e in engines:
            adv = e.advance(now)
            firsts.extend((f.t_ms, f.t_ms - sent_at[f.id][1]) for f in adv.first_tokens)
            for f in adv.finished:
                done.append(f.t_ms)
                if len(done) < args.requests:
                    after(sent_at[f.id][0], f.t_ms)
        reps.sample(now)
    return figures(reps, firsts, done, args.window == "all")


def figures(reps: Replicas, firsts: list[tuple[float, float]], done: list[float],
            everything: bool) -> dict[str, Any]:
    """Mean / p50 / p99 TTFT and requests/s over the second half of the finished
    requests (or all); hit rate and the KV-trap figures over the whole run."""
    t0 = 0.0 if everything else done[len(done) // 2]
    ttft = sorted(x for t, x in firsts if t >= t0)
    measured = sum(1 for t in done if t >= t0)
    stats = [e.stats() for e in reps.engines]
    queries = sum(s.prefix_cache_queries for s in stats)
    return {"ttft_mean_ms": statistics.fmean(ttft), "ttft_p50_ms": percentile(ttft, 50),
            "ttft_p99_ms": percentile(ttft, 99),
            "req_per_s": measured / ((done[-1] - t0) / 1000.0),
            "hit_rate": sum(s.prefix_cache_hits for s in stats) / queries if queries else 0.0,
            "kv_full_share": reps.kv_full_ms / done[-1],
            "peak_replica_in_flight": reps.peak_in_flight}


def spread(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each figure's mean, min and max over ``runs``."""
    return {k: {"mean": statistics.fmean(r[k] for r in runs), "min": min(r[k] for r in runs),
                "max": max(r[k] for r in runs)} for k in runs[0]}


def run_policy(args: argparse.Namespace, policy: str, budget: int, kv: int) -> dict[str, Any]:
    """Every (seed, repeat) run of one policy; one run's figures, or their spread."""
    runs = []
    for seed in args.seed_list:
        for r in range(args.repeats):
            fig = run_case(args, policy, budget, kv, seed, r)
            runs.append({"seed": seed, "repeat": r, **fig})
            if len(args.seed_list) * args.repeats > 1:
                print(f"  {policy} seed={seed} repeat={r}: TTFT {fig['ttft_mean_ms']:.0f} ms "
                      f"(p50 {fig['ttft_p50_ms']:.0f}, p99 {fig['ttft_p99_ms']:.0f}) "
                      f"{fig['req_per_s']:.1f} req/s hit {fig['hit_rate']:.0%} KV full "
                      f"{fig['kv_full_share']:.0%} peak {fig['peak_replica_in_flight']}", flush=True)
    if len(runs) == 1:
        return {k: v for k, v in runs[0].items() if k not in ("seed", "repeat")}
    figs = [{k: v for k, v in r.items() if k not in ("seed", "repeat")} for r in runs]
    out: dict[str, Any] = {k: v["mean"] for k, v in spread(figs).items()}
    return {**out, "spread": spread(figs), "runs": runs}


def run_pair(args: argparse.Namespace, budget: int, kv: int) -> dict[str, Any]:
    """Round robin and pinned on the same requests; prints and returns the case."""
    rr, pinned = (run_policy(args, pol, budget, kv) for pol in ("round_robin", "pinned"))
    case = {"concurrency": args.concurrency, "kv_cache_tokens": kv,
            "max_num_batched_tokens": budget or None, "round_robin": rr, "pinned": pinned,
            "ttft_ratio": rr["ttft_mean_ms"] / pinned["ttft_mean_ms"],
            "req_per_s_ratio": pinned["req_per_s"] / rr["req_per_s"]}
    print(f"c={args.concurrency} kv={kv} budget={budget or 'none'}: round_robin "
          f"{rr['ttft_mean_ms']:.0f} ms {rr['req_per_s']:.1f} req/s hit {rr['hit_rate']:.0%} | "
          f"pinned {pinned['ttft_mean_ms']:.0f} ms {pinned['req_per_s']:.1f} req/s hit "
          f"{pinned['hit_rate']:.0%} | TTFT {case['ttft_ratio']:.2f}x lower, "
          f"req/s {case['req_per_s_ratio']:.2f}x", flush=True)
    if "spread" in rr:
        for name, fig in (("round_robin", rr), ("pinned", pinned)):
            print(f"  {name} over {len(fig['runs'])} runs: " + ", ".join(
                f"{k} {v['mean']:.4g} [{v['min']:.4g}-{v['max']:.4g}]"
                for k, v in fig["spread"].items()), flush=True)
    return case


def parse_seeds(text: str) -> list[int]:
    """``10-24`` (inclusive) or ``15,16,17``."""
    if "-" in text:
        lo, hi = (int(x) for x in text.split("-", 1))
        return list(range(lo, hi + 1))
    return [int(x) for x in text.split(",")]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", type=int, default=8)
    p.add_argument("--concurrency", default="256", help="conversations at a time, comma-separated")
    p.add_argument("--requests", type=int, default=2048)
    p.add_argument("--budgets", default="0,8192,2048", help="max_num_batched_tokens; 0: none")
    p.add_argument("--kv-cache-tokens", default="200000,47000",
                   help="per replica, comma-separated (200,000: the h100 profile's; 80,000: the l4's)")
    p.add_argument("--window", choices=("second-half", "all"), default="second-half")
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--seeds", default="", help="workload seeds, e.g. 10-24 or 15,16 (default: --seed)")
    p.add_argument("--jitter-ms", type=float, default=0.0,
                   help="send each next turn uniform 0..J simulated ms after its previous one ended")
    p.add_argument("--repeats", type=int, default=1, help="runs per seed, jitter seeded 0..R-1")
    p.add_argument("--turn-tokens", type=int, default=150, help="words per user message (+-50 %%)")
    p.add_argument("--output-tokens", type=int, default=64, help="mean max_tokens (+-50 %%)")
    p.add_argument("--turns-mean", type=float, default=8.0)
    p.add_argument("--turns-max", type=int, default=16)
    p.add_argument("--engine-profile", choices=sorted(ENGINE_PROFILES), default="h100",
                   help="simulated GPU (caravan.spec.ENGINE_PROFILES)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    args.seed_list = parse_seeds(args.seeds) if args.seeds else [args.seed]
    if args.repeats < 1:
        p.error("--repeats: must be >= 1")
    cases = []
    for c in (int(x) for x in args.concurrency.split(",")):
        one = argparse.Namespace(**{**vars(args), "concurrency": c})
        for kv in (int(x) for x in args.kv_cache_tokens.split(",")):
            for budget in (int(x) for x in args.budgets.split(",")):
                cases.append(run_pair(one, budget, kv))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                    "label": "pure simulated engines (no Envoy, no Triton), "
                                             "simulated time", "cases": cases}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
