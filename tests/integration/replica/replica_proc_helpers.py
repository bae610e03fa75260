"""Start `caravan replica` as a real child process and talk to it (tritonclient, grpc)."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import tritonclient.grpc as tg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from caravan.local.process import ChildProcess, caravan_argv, free_port

MODEL = "llama"


@dataclass
class RunningReplica:
    proc: ChildProcess
    port: int
    metrics_port: int

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> tg.InferenceServerClient:
        return tg.InferenceServerClient(self.url)


def health_status(url: str, service: str = "", timeout_s: float = 1.0) -> int:
    """grpc.health.v1 Check status (-1 when the server does not answer)."""
    with grpc.insecure_channel(url) as ch:
        try:
            resp = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError:
            return -1
        return int(resp.status)


def wait_for_health(rep: RunningReplica, status: int, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while health_status(rep.url) != status:
        assert rep.proc.alive(), f"replica exited:\n{rep.proc.tail()}"
        assert time.monotonic() < deadline, f"health never became {status}:\n{rep.proc.tail()}"
        time.sleep(0.05)


@contextmanager
def replica_process(
    log_dir: Path, *extra: str, wait_serving: bool = True
) -> Iterator[RunningReplica]:
    """A replica on free ports; stopped (by PID) on exit."""
    port, metrics_port = free_port(), free_port()
    argv = caravan_argv(
        "replica",
        "--model",
        MODEL,
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        *extra,
    )
    with ChildProcess("replica", argv, log_dir / f"replica-{port}.log") as proc:
        rep = RunningReplica(proc, port, metrics_port)
        if wait_serving:
            wait_for_health(rep, health_pb2.HealthCheckResponse.SERVING)
        yield rep


def inputs(
    prompt: str,
    *,
    stream: bool | None = None,
    max_tokens: int | None = 20,
    exclude_input: bool | None = None,
    sampling: dict[str, Any] | None = None,
    **flags: bool,
) -> list[tg.InferInput]:
    """tritonclient inputs for the vLLM contract (flags: return_finish_reason=True, ...)."""
    text = tg.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([prompt.encode()], dtype=np.object_))
    out = [text]
    params = dict(sampling or {})
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    if params:
        sp = tg.InferInput("sampling_parameters", [1], "BYTES")
        sp.set_data_from_numpy(np.array([json.dumps(params).encode()], dtype=np.object_))
        out.append(sp)
    bools = dict(flags)
    if stream is not None:
        bools["stream"] = stream
    if exclude_input is not None:
        bools["exclude_input_in_output"] = exclude_input
    for name, value in bools.items():
        t = tg.InferInput(name, [1], "BOOL")
        t.set_data_from_numpy(np.array([value], dtype=bool))
        out.append(t)
    return out


class StreamCollector:
    """Collects (result, error) pairs from tritonclient's stream callback."""

    def __init__(self) -> None:
        self.q: queue.Queue[tuple[Any, Any]] = queue.Queue()

    def __call__(self, result: Any, error: Any) -> None:
        self.q.put((result, error))

    def next(self, timeout_s: float = 10.0) -> tuple[Any, Any]:
        return self.q.get(timeout=timeout_s)

    def until_final(self, timeout_s: float = 10.0, limit: int = 10_000) -> list[Any]:
        """Results up to and including the one marked triton_final_response (bounded)."""
        results = []
        for _ in range(limit):
            result, error = self.next(timeout_s)
            assert error is None, f"stream error: {error}"
            results.append(result)
            if result.get_response().parameters["triton_final_response"].bool_param:
                return results
        raise AssertionError(f"no final response in {limit} responses")


def text_of(result: Any) -> str:
    return bytes(result.as_numpy("text_output")[0]).decode()


def scrape(rep: RunningReplica) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{rep.metrics_port}/metrics", timeout=5) as r:
        return str(r.read().decode())
