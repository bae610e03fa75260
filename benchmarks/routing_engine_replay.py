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
prefix-cache hit rate (tokens, all requests). Deterministic (seeded); prints a line per
case, writes ``--out`` (default benchmarks/results/routing_engine_replay.json). Seconds
per case (a minute for 59,031 requests at 1,200 conversations).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from caravan.bench.dataset import Lengths
from caravan.bench.workloads import BenchRequest, Kind, WorkloadSpec, make_workload, simulated_answer
from caravan.simulator.engine import Engine, EngineConfig, SeqRequest
from caravan.simulator.kvcache import block_hashes
from caravan.simulator.textgen import token_ids
from caravan.spec import ENGINE_PROFILES, EngineArgs, SimulatorParams

RESULTS = Path(__file__).parent / "results" / "routing_engine_replay.json"
MAX_MODEL_LEN = 16384  # as benchmarks/routing.py's spec
NO_BUDGET = 10**6  # "no budget": more than any step here schedules


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


def run_case(args: argparse.Namespace, policy: str, budget: int, kv: int) -> dict[str, Any]:
    """One closed-loop run; returns its figures."""
    sim = SimulatorParams(profile=args.engine_profile, kv_cache_tokens=kv)
    engine = EngineArgs(model="simulated", max_model_len=MAX_MODEL_LEN,
                        max_num_batched_tokens=budget or NO_BUDGET)
    cfg = EngineConfig.from_spec(sim, engine)
    engines = [Engine(cfg) for _ in range(args.replicas)]
    streams = conversations(args, args.seed + args.concurrency)
    counter = itertools.count()
    sent_at: dict[str, tuple[int, float]] = {}

    def send(slot: int, now: float) -> None:
        i = next(counter)
        replica = i % args.replicas if policy == "round_robin" else slot % args.replicas
        rid = f"{slot}-{i}"
        engines[replica].submit(seq_request(rid, next(streams[slot]), now))
        sent_at[rid] = (slot, now)

    for slot in range(args.concurrency):
        send(slot, 0.0)
    firsts: list[tuple[float, float]] = []
    done: list[float] = []
    while len(done) < args.requests:
        now = min(t for t in (e.next_event_ms() for e in engines) if t is not None)
        for e in engines:
            adv = e.advance(now)
            firsts.extend((f.t_ms, f.t_ms - sent_at[f.id][1]) for f in adv.first_tokens)
            for f in adv.finished:
                done.append(f.t_ms)
                if len(done) < args.requests:
                    send(sent_at[f.id][0], f.t_ms)
    return figures(engines, firsts, done, args.window == "all")


def figures(engines: list[Engine], firsts: list[tuple[float, float]], done: list[float],
            everything: bool) -> dict[str, Any]:
    """Mean TTFT and requests/s over the second half of the finished requests (or all)."""
    t0 = 0.0 if everything else done[len(done) // 2]
    ttft = [x for t, x in firsts if t >= t0]
    measured = sum(1 for t in done if t >= t0)
    stats = [e.stats() for e in engines]
    queries = sum(s.prefix_cache_queries for s in stats)
    return {"ttft_mean_ms": statistics.fmean(ttft),
            "req_per_s": measured / ((done[-1] - t0) / 1000.0),
            "hit_rate": sum(s.prefix_cache_hits for s in stats) / queries if queries else 0.0}


def run_pair(args: argparse.Namespace, budget: int, kv: int) -> dict[str, Any]:
    """Round robin and pinned on the same requests; prints and returns the case."""
    rr, pinned = (run_case(args, pol, budget, kv) for pol in ("round_robin", "pinned"))
    case = {"concurrency": args.concurrency, "kv_cache_tokens": kv,
            "max_num_batched_tokens": budget or None, "round_robin": rr, "pinned": pinned,
            "ttft_ratio": rr["ttft_mean_ms"] / pinned["ttft_mean_ms"],
            "req_per_s_ratio": pinned["req_per_s"] / rr["req_per_s"]}
    print(f"c={args.concurrency} kv={kv} budget={budget or 'none'}: round_robin "
          f"{rr['ttft_mean_ms']:.0f} ms {rr['req_per_s']:.1f} req/s hit {rr['hit_rate']:.0%} | "
          f"pinned {pinned['ttft_mean_ms']:.0f} ms {pinned['req_per_s']:.1f} req/s hit "
          f"{pinned['hit_rate']:.0%} | TTFT {case['ttft_ratio']:.2f}x lower, "
          f"req/s {case['req_per_s_ratio']:.2f}x", flush=True)
    return case


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
    p.add_argument("--turn-tokens", type=int, default=150, help="words per user message (+-50 %%)")
    p.add_argument("--output-tokens", type=int, default=64, help="mean max_tokens (+-50 %%)")
    p.add_argument("--turns-mean", type=float, default=8.0)
    p.add_argument("--turns-max", type=int, default=16)
    p.add_argument("--engine-profile", choices=sorted(ENGINE_PROFILES), default="h100",
                   help="simulated GPU (caravan.spec.ENGINE_PROFILES)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
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
