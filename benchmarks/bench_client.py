"""Is the load generator ever the bottleneck? Requests/s and streamed responses/s that
``caravan bench``'s engine sustains on ONE core, beside a plain tritonclient asyncio
loop sending the same requests, in the same run, against the same near-instant replica.

    .venv/bin/python benchmarks/bench_client.py [--requests 1500 --concurrency 32 --rounds 5]

The client (this process) is pinned to one CPU and the replica (``caravan replica``
with a tiny ``--time-scale``, so it answers almost at once) to the other when the
machine has two. Both clients send identical pre-built requests: the same tensors,
the same headers (``x-model``), the same per-request timeout and, when streaming, the
same ``request_id`` on one bidi stream per request (as ``caravan bench`` does).

Two figures per client and round, over the measured requests only (after warm-up):

* wall: requests (or streamed responses) per second of wall time. On a 2-core box
  the one-core Python replica saturates before the client does, so this figure is
  usually **replica-bound** (``client_cpu_util`` well below 1.0 says so).
* capacity: requests (responses) per second of client CPU time (``time.process_time``
  of this process, every thread, all pinned to one core) = what the client sustains
  on one core once it is the bottleneck. This is the ratio the target applies to.

Rounds alternate which client goes first; figures are medians over rounds; the
ratio is caravan / plain of the median capacity. Target: ratio >= 1.0.
The plain loop does less per request than ``caravan bench`` must: it reads nothing
from the answer, while the engine records replica id, token counts and timings.
Writes benchmarks/results/bench_client.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import tritonclient.grpc.aio as aioclient

from caravan.bench.arrivals import Limits, LoadLevel, Shape
from caravan.bench.dataset import Lengths, Workload
from caravan.bench.results import LevelResult
from caravan.bench.runner import run_sweep
from caravan.bench.stats import RequestRecord
from caravan.bench.triton import Target, build_inputs
from caravan.local.process import ChildProcess, caravan_argv, free_port, wait_for_port

MODEL = "bench"
RESULTS = Path(__file__).parent / "results"
TIMEOUT_S = 120.0  # Target's default per-request timeout; both clients send it


def pin(pid: int, cpu: int) -> None:
    """Pin ``pid`` (0: this process) to ``cpu`` when the machine lets us (no-op otherwise)."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(pid, {cpu})


class CpuMark:
    """A ``ProgressSink`` noting CPU and wall time over the measured phase of a level."""

    def __init__(self) -> None:
        self.cpu = self.wall = 0.0

    def level_started(self, level: LoadLevel, total: int) -> None:
        self.cpu, self.wall = time.process_time(), time.perf_counter()

    def request_done(self, record: RequestRecord) -> None:
        pass

    def level_finished(self, result: LevelResult) -> None:
        self.cpu = time.process_time() - self.cpu
        self.wall = time.perf_counter() - self.wall


def figures(n_req: int, n_resp: int, errors: int, wall: float, cpu: float) -> dict[str, float]:
    return {"seconds": wall, "cpu_seconds": cpu, "requests": n_req, "responses": n_resp,
            "errors": errors, "req_per_s": n_req / wall, "responses_per_s": n_resp / wall,
            "req_per_cpu_s": n_req / cpu, "responses_per_cpu_s": n_resp / cpu,
            "client_cpu_util": cpu / wall}


async def caravan_engine(url: str, n: int, c: int, stream: bool, w: Workload) -> dict[str, float]:
    level = LoadLevel(Shape.CONCURRENCY, c, Limits(n, warmup=c))
    mark = CpuMark()
    result = await run_sweep(Target(url, stream, TIMEOUT_S), MODEL, [level], w, progress=mark)
    lv = result.levels[0]
    ok = [r for r in lv.records if r.ok]
    responses = sum(len(r.itl_ms) + 1 for r in ok)
    return {**figures(len(ok), responses, lv.summary.error_count, mark.wall, mark.cpu),
            "loop_lag_p99_ms": lv.client.loop_p99_ms}


async def plain_loop(url: str, n: int, c: int, stream: bool, w: Workload) -> dict[str, float]:
    """The simplest correct tritonclient asyncio load loop (the baseline)."""
    target = Target(url, stream, TIMEOUT_S)
    warm = [(str(s.index), build_inputs(s, target)) for s in w.build(c, stream_id=1)]
    batch = [(str(s.index), build_inputs(s, target)) for s in w.build(n)]
    headers = {"x-model": MODEL}
    counts = {"requests": 0, "responses": 0, "errors": 0}
    async with aioclient.InferenceServerClient(url) as client:

        async def send(rid: str, inp: list[Any]) -> None:
            try:
                if stream:
                    async def one() -> AsyncIterator[dict[str, Any]]:
                        yield {"model_name": MODEL, "inputs": inp, "request_id": rid}

                    async for _result, error in client.stream_infer(
                            one(), stream_timeout=TIMEOUT_S, headers=headers):
                        counts["responses"] += 1
                        if error is not None:
                            counts["errors"] += 1
                else:
                    await client.infer(MODEL, inp, headers=headers, client_timeout=TIMEOUT_S)
                    counts["responses"] += 1
                counts["requests"] += 1
            except Exception:
                counts["errors"] += 1

        async def run(todo: list[tuple[str, list[Any]]]) -> None:
            it = iter(todo)

            async def worker() -> None:
                for rid, inp in it:
                    await send(rid, inp)

            await asyncio.gather(*(worker() for _ in range(c)))

        await run(warm)
        counts.update(requests=0, responses=0, errors=0)
        cpu, wall = time.process_time(), time.perf_counter()
        await run(batch)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return figures(counts["requests"], counts["responses"], counts["errors"], wall, cpu)


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def measure(url: str, args: argparse.Namespace, stream: bool) -> dict[str, Any]:
    w = Workload(seed=1, input=Lengths(16), output=Lengths(args.tokens if stream else 4))
    runs: dict[str, list[dict[str, float]]] = {"caravan": [], "plain": []}
    unit = "responses" if stream else "req"
    for rnd in range(args.rounds):
        order = [("caravan", caravan_engine), ("plain", plain_loop)]
        for name, fn in order if rnd % 2 == 0 else order[::-1]:
            got = asyncio.run(fn(url, args.requests, args.concurrency, stream, w))
            if got["errors"]:
                raise SystemExit(f"{name} ({'stream' if stream else 'unary'}): {got}")
            runs[name].append(got)
            print(f"  round {rnd} {name:8s} wall {got[f'{unit}_per_s']:6.0f} {unit}/s "
                  f"(client cpu {got['client_cpu_util']:.2f})  capacity "
                  f"{got[f'{unit}_per_cpu_s']:6.0f} {unit}/cpu-s", flush=True)
    med = {name: median_of(r) for name, r in runs.items()}
    key, wall_key = f"{unit}_per_cpu_s", f"{unit}_per_s"
    return {"caravan": med["caravan"], "plain": med["plain"], "rounds": runs,
            "ratio": med["caravan"][key] / med["plain"][key], "ratio_of": key,
            "wall_ratio": med["caravan"][wall_key] / med["plain"][wall_key],
            "replica_bound": max(m["client_cpu_util"] for m in med.values()) < 0.9}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=1500)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--tokens", type=int, default=8, help="streamed tokens per request")
    p.add_argument("--rounds", type=int, default=5)
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
            out[mode] = r = measure(url, args, stream)
            print(f"{mode}: capacity caravan {r['caravan'][r['ratio_of']]:.0f} vs plain "
                  f"{r['plain'][r['ratio_of']]:.0f} {r['ratio_of']}: ratio {r['ratio']:.2f}x; "
                  f"wall ratio {r['wall_ratio']:.2f}x"
                  f"{' (replica-bound)' if r['replica_bound'] else ''}")
    out["config"] = {**{k: str(v) for k, v in vars(args).items()}, "client_cpus": "1",
                     "machine_cpus": str(len(cpus)), "python": sys.version.split()[0],
                     "platform": platform.platform()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
