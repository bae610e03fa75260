"""What does one replica cost in CPU per streamed token, and can it keep up with 100
concurrent streams on this box?

    .venv/bin/python benchmarks/replica_capacity.py [--time-scale 0.1 --max-tokens 300]

Arms, run one after the other in the same process and on the same pinned cores:

* ``tritonserver``: the real tritonserver 2.51 (nvidia-pytriton) running Caravan's
  Python-backend model with the simulated engine (``caravan.triton``), the local replica;
* ``old-simulator``: Caravan's former home-made KServe v2 server with the same engine.
  It was measured in the same run as ``tritonserver`` (commit 60d234a) just before it
  was deleted; benchmarks/results/replica_capacity.json keeps that run (re-running this
  script now measures only ``tritonserver`` and writes replica_capacity_now.json).

Each arm is driven by tritonclient's asyncio client (one bidi stream per request,
stream=true) at concurrency 1, 10, 50 and 100 (closed loop, 2 x concurrency requests per
level, each level bounded by 120 s). Per level: mean / p95 latency, the engine model's
latency for that batch (ratio measured / model: 1.0 = no overhead of its own), the
replica's CPU (utime + stime of the server and its children, e.g. Triton's Python stub,
from /proc) in cores and in CPU seconds per 1,000 streamed tokens, and responses/s.

Writes benchmarks/results/replica_capacity_now.json and a PNG of CPU per 1,000 tokens
beside it; ``--replot`` draws docs/img/replica-capacity.png from the recorded
old-vs-Triton run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc.aio as aioclient
from tritonclient.grpc import InferInput

from caravan.local.process import ChildProcess, descendants, free_port, wait_for_port
from caravan.simulator.engine import EngineConfig
from caravan.triton.launcher import ReplicaOptions, ReplicaPlan, bare_model

MODEL = "cap"
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PNG = ROOT / "docs" / "img" / "replica-capacity.png"
LEVELS = (1, 10, 50, 100)


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its live descendants, in seconds (Linux /proc)."""
    return sum(_own_cpu_seconds(p) for p in descendants(pid))


def _own_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpu: int) -> None:
    """``pid`` and its descendants on ``cpu`` (when this machine has more than one)."""
    try:
        if len(os.sched_getaffinity(0)) > 1:
            for p in descendants(pid):
                os.sched_setaffinity(p, {cpu})
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
    tokens = len(latencies) * max_tokens
    return {"concurrency": concurrency, "requests": len(latencies), "wall_s": wall,
            "mean_s": statistics.fmean(latencies),
            "p95_s": lat_sorted[max(0, int(0.95 * len(lat_sorted)) - 1)],
            "replica_cpu_cores": cpu / wall, "cpu_s_per_1k_tokens": 1000 * cpu / tokens,
            "responses_per_s": responses / wall}


def model_latency_s(concurrency: int, max_tokens: int, prompt_tokens: int, scale: float) -> float:
    cfg = EngineConfig()
    return (max_tokens * cfg.step_ms(concurrency, 0) + prompt_tokens * cfg.prefill_ms_per_token
            ) * scale / 1000.0


def start_triton(args: argparse.Namespace, port: int, mport: int, workdir: Path) -> ChildProcess:
    opts = ReplicaOptions(time_scale=args.time_scale, stream_interval_ms=args.stream_interval_ms)
    plan = ReplicaPlan(workdir / "triton", bare_model(MODEL), port, mport, opts)
    return plan.start(RESULTS / "replica_capacity.tritonserver.log")


ARMS: dict[str, Callable[[argparse.Namespace, int, int, Path], ChildProcess]] = {
    "tritonserver": start_triton,
}


def run_arm(name: str, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    port, mport = free_port(), free_port()
    rows = []
    with ARMS[name](args, port, mport, workdir) as proc:
        wait_for_port("127.0.0.1", port, timeout_s=60)
        time.sleep(0.5)
        pin(proc.pid, 0)
        pin(0, 1)
        for c in LEVELS:
            row = asyncio.run(level(f"127.0.0.1:{port}", c, args.max_tokens, proc.pid))
            row["model_s"] = model_latency_s(c, args.max_tokens, 24, args.time_scale)
            row["ratio"] = row["mean_s"] / row["model_s"]
            rows.append(row)
            print(f"{name:14s} c={c:4d} n={row['requests']:4d} mean={row['mean_s']:.3f}s "
                  f"p95={row['p95_s']:.3f}s ratio={row['ratio']:.2f} "
                  f"cpu={row['replica_cpu_cores']:.2f} cores "
                  f"{row['cpu_s_per_1k_tokens']:.3f} cpu-s/1k tokens "
                  f"responses/s={row['responses_per_s']:.0f}", flush=True)
    return rows


def plot(out: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for arm, rows in out["arms"].items():
        ax.plot([r["concurrency"] for r in rows], [r["cpu_s_per_1k_tokens"] for r in rows],
                marker="o", label=arm)
    ax.set_xscale("log")
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("replica CPU s per 1,000 tokens")
    ax.set_title(f"Replica CPU cost (stream interval {out['stream_interval_ms']:.0f} ms)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--time-scale", type=float, default=0.1)
    ap.add_argument("--max-tokens", type=int, default=300)
    ap.add_argument("--stream-interval-ms", type=float, default=50.0)
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {list(ARMS)}")
    ap.add_argument("--replot", action="store_true",
                    help=f"redraw {PNG.relative_to(ROOT)} from the recorded old-vs-Triton run, no measuring")
    args = ap.parse_args()
    if args.replot:
        plot(json.loads((RESULTS / "replica_capacity.json").read_text()), PNG)
        print(f"wrote {PNG}")
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    arms: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="caravan-capacity-") as tmp:
        for name in args.arms.split(","):
            arms[name] = run_arm(name, args, Path(tmp))
    out = {"time_scale": args.time_scale, "max_tokens": args.max_tokens,
           "stream_interval_ms": args.stream_interval_ms, "arms": arms,
           "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                       "platform": platform.platform()}}
    path = RESULTS / "replica_capacity_now.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    plot(out, path.with_suffix(".png"))
    print(f"wrote {path} and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
