"""Is the load generator ever the bottleneck? Requests/s and streamed responses/s that
``caravan bench``'s engine sustains on ONE core, beside a plain tritonclient asyncio
loop sending the same requests, in the same run, against the same instant server.

    .venv/bin/python benchmarks/bench_client.py [--requests 3000 --concurrency 32 --rounds 15]

The client (this process) is pinned to one CPU and the server to the other when the
machine has two. The server (``--server instant``, the default) is
``benchmarks/instant_server.py``: canned, replica-shaped answers sent at once, cheaper
per request than either client, so the client is the bottleneck (``client_cpu_util``
near 1.0) and its throughput is what one core sustains. ``--server replica`` uses a
real replica instead (``tritonserver`` with the simulated vLLM engine, started through
``caravan.local.launch``; server and model processes pinned), which costs more CPU per
request than the client: the client then idles (server-bound) and the figures measure
wake-ups, not capacity. Both clients send identical requests: the same tensors, the
same headers (``x-model``), the same ``request_id``, the same per-request timeout, and
one bidi ``ModelStreamInfer`` stream per request (as ``caravan bench`` does; Triton
serves no unary inference for the decoupled vLLM model). Two modes: ``no-stream``
(``stream`` false: exactly one final response per request) and ``stream`` (``--tokens``
responses per request).

Two figures per client and round, over the measured requests only (after warm-up):

* wall: requests (or streamed responses) per second of wall time;
* capacity: requests (responses) per second of client CPU time (``time.process_time``
  of this process, every thread, all pinned to one core) = what the client sustains
  on one core. This is the ratio the target applies to.

The engine runs on the event loop ``caravan bench`` uses (uvloop when installed,
``caravan.bench.loop``); the plain loop on asyncio's default, as a plain script would.
Rounds alternate which client goes first. The ratio is the median over rounds of
caravan / plain within a round (pairs ran back to back, so a slow spell of a shared
machine moves both alike). Target: ratio >= 1.0. The plain loop does less per request
than ``caravan bench`` must: it reads nothing from the answer, while the engine records
replica, token counts and timings.
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

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient

from caravan.bench import loop as bench_loop
from caravan.bench.arrivals import Limits, LoadLevel, Shape
from caravan.bench.dataset import Lengths, RequestSpec, Workload
from caravan.bench.results import LevelResult
from caravan.bench.runner import run_sweep
from caravan.bench.stats import RequestRecord
from caravan.bench.triton import Target
from caravan.local.launch import Launcher, start_listening
from caravan.local.process import descendants, free_port
from caravan.triton.launcher import ReplicaOptions

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


def _tensor(name: str, dtype: str, value: Any) -> grpcclient.InferInput:
    t = grpcclient.InferInput(name, [1], dtype)
    t.set_data_from_numpy(np.array([value], dtype=np.object_ if dtype == "BYTES" else bool))
    return t


def build_inputs(spec: RequestSpec, target: Target) -> list[grpcclient.InferInput]:
    """The plain loop's tensors, built the usual tritonclient way (same contract as
    ``caravan.bench.wire``)."""
    sampling = json.dumps({"max_tokens": spec.max_tokens}).encode()
    return [_tensor("text_input", "BYTES", spec.prompt.encode()),
            _tensor("stream", "BOOL", target.stream),
            _tensor("sampling_parameters", "BYTES", sampling),
            _tensor("exclude_input_in_output", "BOOL", True),
            _tensor("return_num_input_tokens", "BOOL", True),
            _tensor("return_num_output_tokens", "BOOL", True)]


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
                async def one() -> AsyncIterator[dict[str, Any]]:
                    yield {"model_name": MODEL, "inputs": inp, "request_id": rid}

                async for _result, error in client.stream_infer(
                        one(), stream_timeout=TIMEOUT_S, headers=headers):
                    counts["responses"] += 1
                    if error is not None:
                        counts["errors"] += 1
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
    w = Workload(seed=1, input=Lengths(16), output=Lengths(args.tokens))
    runs: dict[str, list[dict[str, float]]] = {"caravan": [], "plain": []}
    unit = "responses" if stream else "req"
    for rnd in range(args.rounds):
        order = [("caravan", caravan_engine), ("plain", plain_loop)]
        for name, fn in order if rnd % 2 == 0 else order[::-1]:
            run = bench_loop.run if name == "caravan" else asyncio.run  # as `caravan bench` runs
            got = run(fn(url, args.requests, args.concurrency, stream, w))
            if got["errors"]:
                raise SystemExit(f"{name} ({'stream' if stream else 'no-stream'}): {got}")
            runs[name].append(got)
            print(f"  round {rnd} {name:8s} wall {got[f'{unit}_per_s']:6.0f} {unit}/s "
                  f"(client cpu {got['client_cpu_util']:.2f})  capacity "
                  f"{got[f'{unit}_per_cpu_s']:6.0f} {unit}/cpu-s", flush=True)
    med = {name: median_of(r) for name, r in runs.items()}
    key, wall_key = f"{unit}_per_cpu_s", f"{unit}_per_s"
    return {"caravan": med["caravan"], "plain": med["plain"], "rounds": runs,
            "ratio": paired_ratio(runs, key), "ratio_of": key,
            "wall_ratio": paired_ratio(runs, wall_key),
            "ratio_of_medians": med["caravan"][key] / med["plain"][key],
            "server_bound": max(m["client_cpu_util"] for m in med.values()) < 0.9}


def paired_ratio(runs: dict[str, list[dict[str, float]]], key: str) -> float:
    """Median over rounds of caravan / plain within the round: both ran back to back,
    so a slow spell of this shared machine moves both sides of a pair alike."""
    return statistics.median(c[key] / p[key] for c, p in zip(runs["caravan"], runs["plain"],
                                                                  strict=True))


def start_server(args: argparse.Namespace, launcher: Launcher) -> tuple[str, list[int]]:
    """The server under test, ready; (its HOST:PORT, the PIDs to pin to the server's core)."""
    if args.server == "replica":
        replica = launcher.replica("bench", MODEL, ReplicaOptions(time_scale=args.time_scale,
                                                                  stream_interval_ms=0))
        return replica.endpoint, descendants(replica.proc.pid)
    port = free_port()
    argv = [sys.executable, str(Path(__file__).parent / "instant_server.py"), "--port", str(port),
            "--tokens", str(args.tokens)]
    proc = launcher.own(start_listening("instant", argv, launcher.logs / "instant.log", port))
    return f"127.0.0.1:{port}", [proc.pid]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--tokens", type=int, default=8, help="streamed tokens per request")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--time-scale", type=float, default=0.0001,
                   help="the replica's time scale (--server replica)")
    p.add_argument("--server", choices=("instant", "replica"), default="instant",
                   help="instant: canned answers (benchmarks/instant_server.py), cheaper per "
                        "request than the client; replica: a real tritonserver replica")
    p.add_argument("--out", type=Path, default=RESULTS / "bench_client.json")
    args = p.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    with Launcher(Path(tempfile.mkdtemp(prefix="caravan-bench-client-"))) as launcher:
        url, server_pids = start_server(args, launcher)
        if len(cpus) > 1:
            for pid in server_pids:
                pin(pid, cpus[1])
            pin(0, cpus[0])
        out: dict[str, Any] = {}
        for stream in (False, True):
            mode = "stream" if stream else "no-stream"
            print(f"{mode}: {args.requests} requests at concurrency {args.concurrency}")
            out[mode] = r = measure(url, args, stream)
            print(f"{mode}: capacity caravan {r['caravan'][r['ratio_of']]:.0f} vs plain "
                  f"{r['plain'][r['ratio_of']]:.0f} {r['ratio_of']}: ratio {r['ratio']:.2f}x; "
                  f"wall ratio {r['wall_ratio']:.2f}x"
                  f"{' (server-bound: client CPU < 0.9)' if r['server_bound'] else ''}")
    out["config"] = {**{k: str(v) for k, v in vars(args).items()}, "client_cpus": "1",
                     "machine_cpus": str(len(cpus)),
                     "caravan_event_loop": bench_loop.loop_name(), "plain_event_loop": "asyncio",
                     "python": sys.version.split()[0],
                     "platform": platform.platform()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
