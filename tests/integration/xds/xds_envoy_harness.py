"""Harness for the xDS integration tests: an in-process control plane on its own
event-loop thread, stub replica processes, and a real Envoy with the rendered bootstrap.

Test code only. Every process is started as a ``ChildProcess`` and stopped by PID.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import yaml
from prometheus_client import CollectorRegistry
from tritonclient.grpc import service_pb2 as pb

from caravan.bench.answer import split_bytes, upstream_host
from caravan.bench.wire import MODEL_STREAM_INFER, decode_stream_response, encode_request
from caravan.discovery.local import FileReplicaSource
from caravan.local.process import (
    ChildProcess,
    caravan_argv,
    free_port,
    venv_binary,
    wait_for_port,
)
from caravan.render.envoy import bootstrap
from caravan.spec import PlatformSpec
from caravan.xds.controlplane import ControlPlane

T = TypeVar("T")
STUB = Path(__file__).with_name("xds_stub_replica.py")


class BackgroundControlPlane:
    """A ``ControlPlane`` running on an event loop in a daemon thread."""

    def __init__(self, spec: PlatformSpec, registry_file: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.metrics = CollectorRegistry()
        self.cp: ControlPlane = self.call(self._make(spec, registry_file))
        self._task = self.loop.call_soon_threadsafe(self._start)
        self.call(asyncio.wait_for(self.cp.became_ready.wait(), 15))

    async def _make(self, spec: PlatformSpec, registry_file: Path) -> ControlPlane:
        return ControlPlane(
            spec, FileReplicaSource(registry_file, poll_s=0.02), self.metrics, port=0
        )

    def _start(self) -> None:
        self.run_task = self.loop.create_task(self.cp.run())

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 20) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn: Callable[[], T]) -> T:
        async def wrapper() -> T:
            return fn()

        return self.call(wrapper())

    def stop(self) -> None:
        """Cancel the control plane and end its loop thread. Idempotent."""
        if not self._thread.is_alive():
            return

        async def cancel() -> None:
            self.run_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.run_task

        with contextlib.suppress(concurrent.futures.TimeoutError):
            self.call(cancel())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


def start_replica(tmp: Path, replica_id: str, model: str) -> tuple[ChildProcess, int]:
    """A real ``caravan replica`` (Triton-protocol simulator) at time scale 0.01."""
    port, metrics = free_port(), free_port()
    argv = caravan_argv(
        "replica",
        "--model",
        model,
        "--port",
        str(port),
        "--metrics-port",
        str(metrics),
        "--replica-id",
        replica_id,
        "--time-scale",
        "0.01",
    )
    proc = ChildProcess(f"replica-{replica_id}", argv, tmp / "logs" / f"{replica_id}.log").start()
    return proc, port


def start_stub(tmp: Path, replica_id: str, model: str, *flags: str) -> tuple[ChildProcess, int]:
    """A ``xds_stub_replica.py`` process (``flags``: e.g. ``--fail-streams``)."""
    port = free_port()
    proc = ChildProcess(
        f"stub-{replica_id}",
        [sys.executable, str(STUB), "--port", str(port), "--id", replica_id, "--model", model, *flags],
        tmp / "logs" / f"{replica_id}.log",
    ).start()
    return proc, port


@dataclass(frozen=True)
class StreamReply:
    """What one ``stream_infer`` call got: Envoy's ``x-caravan-upstream`` ("" when
    absent) and every response of the stream, in order."""

    upstream: str
    responses: tuple[pb.ModelStreamInferResponse, ...]

    @property
    def text(self) -> str:
        """The concatenated text of every response."""
        out = []
        for r in self.responses:
            names = [o.name for o in r.infer_response.outputs]
            if "text_output" in names:
                raw = r.infer_response.raw_output_contents[names.index("text_output")]
                out += [b.decode() for b in split_bytes(raw)]
        return "".join(out)

    @property
    def finals(self) -> list[bool]:
        """``triton_final_response`` of each response."""
        return [r.infer_response.parameters["triton_final_response"].bool_param for r in self.responses]


def stream_infer(url: str, model: str, headers: Mapping[str, str], *, stream: bool = False,
                 timeout_s: float = 10) -> StreamReply:
    """One request (caravan's wire encoding, ``max_tokens`` 6) on one ModelStreamInfer
    stream to ``url`` with ``headers``, read to the end. Raises ``grpc.RpcError`` for a
    failed stream."""
    request = encode_request(model, "it-1", "hi", 6, stream=stream, count_tokens=False)
    with grpc.insecure_channel(url) as channel:
        rpc = channel.stream_stream(MODEL_STREAM_INFER, response_deserializer=decode_stream_response)
        call = rpc(iter((request,)), metadata=tuple(headers.items()), timeout=timeout_s)
        responses = tuple(call)
        return StreamReply(upstream_host(call.initial_metadata()), responses)


def start_envoy(
    tmp: Path, spec: PlatformSpec, xds: list[tuple[str, int]], node_id: str, delta: bool = False
) -> ChildProcess:
    path = tmp / f"envoy-{node_id}.yaml"
    path.write_text(yaml.safe_dump(bootstrap(spec, xds, node_id=node_id, delta=delta)))
    proc = ChildProcess(
        f"envoy-{node_id}",
        [
            venv_binary("envoy"),
            "-c",
            str(path),
            "--use-dynamic-base-id",
            "--concurrency",
            "1",
            "--log-level",
            "warning",
            "--drain-time-s",
            "1",
        ],
        tmp / "logs" / f"envoy-{node_id}.log",
    ).start()
    wait_for_port("127.0.0.1", spec.envoy.admin_port, 20)
    return proc


def admin_get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
        return str(r.read().decode())


def cluster_hosts(admin_port: int) -> dict[str, dict[str, str]]:
    """{cluster: {"host:port": health_flags}} from Envoy's /clusters."""
    out: dict[str, dict[str, str]] = {}
    for line in admin_get(admin_port, "/clusters").splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[2] == "health_flags":
            out.setdefault(parts[0], {})[parts[1]] = parts[3]
    return out


def wait_until(pred: Callable[[], bool], timeout_s: float = 15, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception as exc:  # admin not up yet, etc.
            last_exc = exc
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what} (last error: {last_exc})")


def healthy_hosts(admin_port: int, cluster: str) -> set[str]:
    return {
        h for h, flags in cluster_hosts(admin_port).get(cluster, {}).items() if flags == "healthy"
    }
