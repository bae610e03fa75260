"""Can one ``caravan replica`` process keep up with 100 concurrent streams on this box?

    .venv/bin/python benchmarks/replica_capacity.py [--time-scale 0.1 --max-tokens 300]

Starts a replica (pinned to CPU 0 when there are two) and drives it from this process
(pinned to CPU 1) with tritonclient's asyncio client, one bidi stream per request
(stream=true), at concurrency 1, 10, 50 and 100 (closed loop, 2 x concurrency requests
per level, bounded by 120 s per level). For each level it reports:

* mean / p95 latency measured by the client, in real seconds;
* the engine model's latency for that batch size (``max_tokens * step_ms(batch) *
  time_scale`` plus prefill), and the ratio measured / model: 1.0 means the replica
  adds no overhead of its own; well above 1.0 means it cannot keep up (CPU bound);
* the replica's CPU use (utime + stime from /proc, in cores) and streamed responses/s.

Writes benchmarks/results/replica_capacity.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc.aio as aioclient
from tritonclient.grpc import InferInput

from caravan.local.process import ChildProcess, caravan_argv, free_port, wait_for_port
from caravan.replica.engine import EngineConfig

MODEL = "cap"
RESULTS = Path(__file__).parent / "results"
LEVELS = (1, 10, 50, 100)


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpu: int) -> None:
    try:
        if len(os.sched_getaffinity(0)) > 1:
            os.sched_setaffinity(pid, {cpu})
    except (AttributeError, OSError):
        pass


def build_inputs(prompt: str, max_tokens: int) -> list[InferInput]:
    text = InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([prompt.encode()], dtype=np.object_))
    stream = InferInput("stream", [1], "BOOL")
    stream.set_data_from_numpy(np.array([True]))
    params = InferInput("sampling_parameters", [1], "BYTES")
    params.set_data_from_numpy(np.array([json.dumps({"max_tokens": max_tokens}).encode()],
                                        dtype=np.object_))
    return [text, stream, params]


async def one_request(client: aioclient.InferenceServerClient, i: int, max_tokens: int
                      ) -> tuple[float, int]:
    """Latency (s) and number of streamed responses of one request."""
    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield {"model_name": MODEL, "inputs": build_inputs(f"prompt number {i} " * 8, max_tokens),
               "request_id": str(i)}

    t0 = time.perf_counter()
    n = 0
    async for result, error in client.stream_infer(requests()):
        if error is not None:
            raise RuntimeError(str(error))
        n += 1
        if result.get_response().parameters["triton_final_response"].bool_param:
            break
    return time.perf_counter() - t0, n


async def level(url: str, concurrency: int, max_tokens: int, pid: int) -> dict[str, Any]:
    total = 2 * concurrency
    client = aioclient.InferenceServerClient(url)
    latencies: list[float] = []
    responses = 0
    counter = iter(range(total))
    deadline = time.monotonic() + 120

    async def worker() -> None:
        nonlocal responses
        for i in counter:
            if time.monotonic() > deadline:
                return
            lat, n = await one_request(client, i, max_tokens)
            latencies.append(lat)
            responses += n

    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    cpu = cpu_seconds(pid) - cpu0
    await client.close()
    lat_sorted = sorted(latencies)
    return {"concurrency": concurrency, "requests": len(latencies), "wall_s": wall,
            "mean_s": statistics.fmean(latencies),
            "p95_s": lat_sorted[max(0, int(0.95 * len(lat_sorted)) - 1)],
            "replica_cpu_cores": cpu / wall, "responses_per_s": responses / wall}


def model_latency_s(concurrency: int, max_tokens: int, prompt_tokens: int, scale: float) -> float:
    cfg = EngineConfig()
    return (max_tokens * cfg.step_ms(concurrency, 0) + prompt_tokens * cfg.prefill_ms_per_token
            ) * scale / 1000.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--time-scale", type=float, default=0.1)
    ap.add_argument("--max-tokens", type=int, default=300)
    ap.add_argument("--stream-interval-ms", type=float, default=50.0)
    args = ap.parse_args()
    port, mport = free_port(), free_port()
    RESULTS.mkdir(parents=True, exist_ok=True)
    argv = caravan_argv("replica", "--model", MODEL, "--port", str(port), "--metrics-port",
                        str(mport), "--time-scale", str(args.time_scale),
                        "--stream-interval-ms", str(args.stream_interval_ms))
    rows = []
    with ChildProcess("replica", argv, RESULTS / "replica_capacity.replica.log") as proc:
        wait_for_port("127.0.0.1", port)
        time.sleep(0.5)
        pin(proc.pid, 0)
        pin(0, 1)
        for c in LEVELS:
            row = asyncio.run(level(f"127.0.0.1:{port}", c, args.max_tokens, proc.pid))
            row["model_s"] = model_latency_s(c, args.max_tokens, 24, args.time_scale)
            row["ratio"] = row["mean_s"] / row["model_s"]
            rows.append(row)
            print(f"c={c:4d} n={row['requests']:4d} mean={row['mean_s']:.3f}s "
                  f"p95={row['p95_s']:.3f}s model={row['model_s']:.3f}s ratio={row['ratio']:.2f} "
                  f"replica_cpu={row['replica_cpu_cores']:.2f} cores "
                  f"responses/s={row['responses_per_s']:.0f}", flush=True)
    out = {"time_scale": args.time_scale, "max_tokens": args.max_tokens,
           "stream_interval_ms": args.stream_interval_ms, "levels": rows,
           "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                       "platform": platform.platform()}}
    (RESULTS / "replica_capacity.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS / 'replica_capacity.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
