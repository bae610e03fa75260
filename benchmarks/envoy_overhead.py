"""Latency Envoy adds: the same unary load straight at a replica and through Envoy.

    .venv/bin/python benchmarks/envoy_overhead.py [--requests 2000 --concurrency 50]

Starts the local stack (``LocalStack``: one ``caravan replica`` answering almost at
once, ``caravan xds --registry FILE``, real Envoy with the bootstrap from
``caravan.render.envoy``; no Prometheus), then runs ``caravan bench``'s engine in
unary mode against the replica directly and through Envoy, alternating for
``--rounds`` rounds, in two shapes: closed-loop concurrency 50 (the issue's load; on
a small machine it saturates the Python client, so client queueing dominates) and an
open-loop Poisson rate capped at 50 in flight (``--rate``, below saturation, so the
path's own latency shows). Reports added p50 and p99 (ms, through - direct)
and their ratios (through / direct), pooled over rounds. Target: added p50 <= 0.5 ms.
Writes benchmarks/results/envoy_overhead.json. All traffic is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from caravan.bench.arrivals import Limits, LoadLevel, Shape
from caravan.bench.dataset import Lengths, Workload
from caravan.bench.runner import run_sweep
from caravan.bench.stats import RequestRecord, percentile
from caravan.bench.triton import Target
from caravan.local.supervisor import LocalPorts, LocalStack, StackOptions
from caravan.spec import parse_spec

MODEL = "overhead"
RESULTS = Path(__file__).parent / "results"


def spec_dict() -> dict[str, Any]:
    return {"models": [{"name": MODEL, "engine": {"model": "sim/overhead"},
                        "replicas": {"min": 1, "initial": 1, "max": 1}}]}


def run_once(url: str, level: LoadLevel) -> list[RequestRecord]:
    w = Workload(seed=3, input=Lengths(16), output=Lengths(2))
    result = asyncio.run(run_sweep(Target(url, stream=False), MODEL, [level], w))
    lv = result.levels[0]
    if lv.summary.error_count:
        raise SystemExit(f"{url}: {lv.summary.errors}")
    return list(lv.records)


def figures(records: list[RequestRecord]) -> dict[str, float]:
    e2e = [r.e2e_ms for r in records]
    return {"p50_ms": percentile(e2e, 50), "p99_ms": percentile(e2e, 99),
            "mean_ms": sum(e2e) / len(e2e), "requests": float(len(e2e))}


def compare(direct: dict[str, float], envoy: dict[str, float]) -> dict[str, Any]:
    return {"direct": direct, "envoy": envoy,
            "added_p50_ms": envoy["p50_ms"] - direct["p50_ms"],
            "added_p99_ms": envoy["p99_ms"] - direct["p99_ms"],
            "ratio_p50": envoy["p50_ms"] / direct["p50_ms"],
            "ratio_p99": envoy["p99_ms"] / direct["p99_ms"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rate", type=float, default=200.0, help="open-loop shape, req/s")
    p.add_argument("--rate-requests", type=int, default=1000)
    p.add_argument("--time-scale", type=float, default=0.0001)
    p.add_argument("--out", type=Path, default=RESULTS / "envoy_overhead.json")
    args = p.parse_args()
    spec = parse_spec(spec_dict(), "envoy_overhead")
    options = StackOptions(time_scale=args.time_scale, prometheus=False,
                           replica_args=("--stream-interval-ms", "0"))
    shapes = {
        f"c{args.concurrency}": LoadLevel(Shape.CONCURRENCY, args.concurrency,
                                          Limits(args.requests, warmup=args.concurrency)),
        f"rate{args.rate:g}": LoadLevel(Shape.POISSON, args.rate, Limits(args.rate_requests,
                                        warmup=20), max_concurrency=args.concurrency),
    }
    pooled: dict[tuple[str, str], list[RequestRecord]] = {}
    with tempfile.TemporaryDirectory(prefix="caravan-overhead-") as tmp, \
            LocalStack(spec, Path(tmp), LocalPorts.free(), options) as stack:
        (replica,) = stack.replicas(MODEL)
        urls = {"direct": replica.endpoint, "envoy": stack.endpoint}
        for rnd in range(args.rounds):
            order = ["direct", "envoy"] if rnd % 2 == 0 else ["envoy", "direct"]
            for shape, level in shapes.items():
                for name in order:
                    recs = run_once(urls[name], level)
                    pooled.setdefault((shape, name), []).extend(recs)
                    f = figures(recs)
                    print(f"  round {rnd} {shape} {name:6s} p50 {f['p50_ms']:.3f} ms  "
                          f"p99 {f['p99_ms']:.3f} ms", flush=True)
    out: dict[str, Any] = {"config": {**{k: str(v) for k, v in vars(args).items()},
                                      "mode": "unary", "python": sys.version.split()[0]}}
    for shape in shapes:
        out[shape] = compare(figures(pooled[(shape, "direct")]), figures(pooled[(shape, "envoy")]))
        r = out[shape]
        print(f"{shape}: direct p50 {r['direct']['p50_ms']:.3f} p99 {r['direct']['p99_ms']:.3f} ms"
              f" | envoy p50 {r['envoy']['p50_ms']:.3f} p99 {r['envoy']['p99_ms']:.3f} ms | added"
              f" p50 {r['added_p50_ms']:+.3f} ms ({r['ratio_p50']:.2f}x), p99 "
              f"{r['added_p99_ms']:+.3f} ms ({r['ratio_p99']:.2f}x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
