"""Is the load generator ever the bottleneck? Requests/s and streamed responses/s that
``caravan bench``'s engine sustains on ONE core, beside a plain tritonclient asyncio
loop doing the same work, in the same run, against the same near-instant replica.

    .venv/bin/python benchmarks/bench_client.py [--requests 1500 --concurrency 32]

The client (this process) is pinned to one CPU and the replica (``caravan replica``
with a tiny ``--time-scale``, so it answers almost at once) to another when the
machine has two. Both clients send identical pre-built requests (one bidi stream per
request when streaming, as ``caravan bench`` does); rounds alternate the order and
the best round of each is kept. Target: ratio (caravan / plain) >= 1.0.
Writes benchmarks/results/bench_client.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import tritonclient.grpc.aio as aioclient

from caravan.bench.arrivals import Limits, LoadLevel, Shape
from caravan.bench.dataset import Lengths, Workload
from caravan.bench.runner import run_sweep
from caravan.bench.triton import Target, build_inputs
from caravan.local.process import ChildProcess, caravan_argv, free_port, wait_for_port

MODEL = "bench"
RESULTS = Path(__file__).parent / "results"


def pin(pid: int, cpu: int) -> None:
    """Pin ``pid`` to ``cpu`` when the machine lets us (no-op otherwise)."""
    try:
        if cpu in os.sched_getaffinity(0) or pid != 0:
            os.sched_setaffinity(pid, {cpu})
    except (AttributeError, OSError):
        pass


async def caravan_engine(url: str, n: int, c: int, stream: bool, w: Workload) -> dict[str, float]:
    level = LoadLevel(Shape.CONCURRENCY, c, Limits(n, warmup=c))
    result = await run_sweep(Target(url, stream), MODEL, [level], w)
    lv = result.levels[0]
    s = lv.summary
    responses = sum(len(r.itl_ms) + 1 for r in lv.records if r.ok)
    return {"seconds": s.duration_s, "requests": s.ok, "errors": s.error_count,
            "responses": responses, "req_per_s": s.request_throughput,
            "responses_per_s": responses / s.duration_s if s.duration_s else 0.0,
            "loop_lag_p99_ms": lv.client.loop_p99_ms}


async def plain_loop(url: str, n: int, c: int, stream: bool, w: Workload) -> dict[str, float]:
    """The simplest correct tritonclient asyncio load loop (the baseline)."""
    target = Target(url, stream)
    warm = [build_inputs(s, target) for s in w.build(c, stream_id=1)]
    inputs = [build_inputs(s, target) for s in w.build(n)]
    headers = {"x-model": MODEL}
    counts = {"requests": 0, "responses": 0, "errors": 0}
    async with aioclient.InferenceServerClient(url) as client:

        async def send(inp: list[Any]) -> None:
            try:
                if stream:
                    async def one() -> AsyncIterator[dict[str, Any]]:
                        yield {"model_name": MODEL, "inputs": inp}

                    async for _result, error in client.stream_infer(one(), headers=headers):
                        counts["responses"] += 1
                        if error is not None:
                            counts["errors"] += 1
                else:
                    await client.infer(MODEL, inp, headers=headers)
                    counts["responses"] += 1
                counts["requests"] += 1
            except Exception:
                counts["errors"] += 1

        async def run(batch: list[list[Any]]) -> None:
            it = iter(batch)

            async def worker() -> None:
                for inp in it:
                    await send(inp)

            await asyncio.gather(*(worker() for _ in range(c)))

        await run(warm)
        counts.update(requests=0, responses=0, errors=0)
        t = time.perf_counter()
        await run(inputs)
        seconds = time.perf_counter() - t
    return {"seconds": seconds, **counts, "req_per_s": counts["requests"] / seconds,
            "responses_per_s": counts["responses"] / seconds}


def measure(url: str, args: argparse.Namespace, stream: bool) -> dict[str, Any]:
    w = Workload(seed=1, input=Lengths(16), output=Lengths(args.tokens if stream else 4))
    best: dict[str, dict[str, float]] = {}
    for rnd in range(args.rounds):
        order = [("caravan", caravan_engine), ("plain", plain_loop)]
        for name, fn in order if rnd % 2 == 0 else order[::-1]:
            got = asyncio.run(fn(url, args.requests, args.concurrency, stream, w))
            if got["errors"]:
                raise SystemExit(f"{name} ({'stream' if stream else 'unary'}): {got}")
            print(f"  round {rnd} {name:8s} {got['req_per_s']:8.0f} req/s "
                  f"{got['responses_per_s']:8.0f} responses/s", flush=True)
            if name not in best or got["req_per_s"] > best[name]["req_per_s"]:
                best[name] = got
    key = "responses_per_s" if stream else "req_per_s"
    ratio = best["caravan"][key] / best["plain"][key]
    return {"caravan": best["caravan"], "plain": best["plain"], "ratio": ratio, "ratio_of": key}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=1500)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--tokens", type=int, default=8, help="streamed tokens per request")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--time-scale", type=float, default=0.0001)
    p.add_argument("--out", type=Path, default=RESULTS / "bench_client.json")
    args = p.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    port, mport = free_port(), free_port()
    argv = caravan_argv("replica", "--model", MODEL, "--port", str(port), "--metrics-port",
                        str(mport), "--time-scale", str(args.time_scale),
                        "--stream-interval-ms", "0")
    log = Path(tempfile.mkdtemp(prefix="caravan-bench-client-")) / "replica.log"
    with ChildProcess("replica", argv, log) as replica:
        if len(cpus) > 1:
            pin(replica.pid, cpus[1])
            pin(0, cpus[0])
        wait_for_port("127.0.0.1", port, 30)
        url = f"127.0.0.1:{port}"
        out: dict[str, Any] = {}
        for stream in (False, True):
            mode = "stream" if stream else "unary"
            print(f"{mode}: {args.requests} requests at concurrency {args.concurrency}")
            out[mode] = measure(url, args, stream)
            r = out[mode]
            print(f"{mode}: caravan {r['caravan'][r['ratio_of']]:.0f} vs plain "
                  f"{r['plain'][r['ratio_of']]:.0f} {r['ratio_of']}: ratio {r['ratio']:.2f}x")
    out["config"] = {**{k: str(v) for k, v in vars(args).items()}, "client_cpus": "1",
                     "machine_cpus": str(len(cpus)), "python": sys.version.split()[0],
                     "platform": platform.platform()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
