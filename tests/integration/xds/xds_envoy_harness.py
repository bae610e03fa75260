"""Harness for the xDS integration tests: an in-process control plane on its own
event-loop thread, replica processes, and a real Envoy with the rendered bootstrap.

Replicas: ``start_replica`` starts the real ``tritonserver`` with the simulated vLLM
engine (``caravan.triton.launcher.ReplicaPlan``), for tests about inference through
Envoy; ``start_stub`` starts ``xds_stub_replica.py``, a fast double kept only for what
the real server cannot produce on demand (see its docstring). Envoy and the waits come
from ``caravan.local.launch``, the starters ``caravan up`` uses.

Test code only. Every process is started as a ``ChildProcess`` and stopped by PID.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sys
import threading
import urllib.request
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from prometheus_client import CollectorRegistry
from tritonclient.grpc import service_pb2 as pb

from caravan.bench.answer import split_bytes, upstream_host
from caravan.bench.wire import MODEL_STREAM_INFER, decode_stream_response, encode_request
from caravan.discovery.registry_file import FileReplicaSource
from caravan.local.launch import start_envoy as launch_envoy
from caravan.local.launch import wait_until as wait_until
from caravan.local.launch import write_envoy_bootstrap
from caravan.local.process import ChildProcess, free_port, port_open
from caravan.spec import PlatformSpec
from caravan.triton.launcher import ReplicaOptions, ReplicaPlan, bare_model
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


REPLICA_OPTIONS = ReplicaOptions(time_scale=0.01, stream_interval_ms=0, exit_timeout_s=10)


def start_replica(tmp: Path, replica_id: str, model: str) -> tuple[ChildProcess, int]:
    """A real ``tritonserver`` replica of ``model`` (simulated engine, time scale 0.01),
    started and not waited for: its gRPC port opens once the model has loaded (~2-4 s),
    and Envoy's health check finds it then. Returns (process, gRPC port)."""
    plan = ReplicaPlan(tmp / "replicas" / replica_id, bare_model(model), free_port(), free_port(),
                       REPLICA_OPTIONS)
    return plan.start(tmp / "logs" / f"{replica_id}.log"), plan.grpc_port


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
    """A real Envoy on ``spec``'s rendered bootstrap; returns once its admin port listens."""
    config = write_envoy_bootstrap(tmp / f"envoy-{node_id}.yaml", spec, xds, node_id=node_id, delta=delta)
    return launch_envoy(config, tmp / "logs" / f"envoy-{node_id}.log", admin_port=spec.envoy.admin_port,
                        name=f"envoy-{node_id}", drain_time_s=1)


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


def healthy_hosts(admin_port: int, cluster: str) -> set[str]:
    return {
        h for h, flags in cluster_hosts(admin_port).get(cluster, {}).items() if flags == "healthy"
    }


def listening(admin_port: int, port: int) -> bool:
    """Whether Envoy's admin ``/listeners`` (``name::host:port`` lines) shows an active
    listener on ``port`` and that port accepts connections. Envoy asks for listeners
    (LDS) only once its clusters are warm, so healthy hosts do not mean the listener is
    up; one whose port another process took is rejected and never shows; and Envoy
    lists a listener before its worker accepts on it (seen under load: connection
    refused right after it showed)."""
    lines = admin_get(admin_port, "/listeners").splitlines()
    shown = any(line.rpartition(":")[2] == str(port) for line in lines)
    return shown and port_open("127.0.0.1", port)


def wait_serving(spec: PlatformSpec, cluster: str, hosts: set[str], timeout_s: float = 20) -> None:
    """Until Envoy has ``spec``'s listener bound and exactly ``hosts`` healthy in
    ``cluster``: what a request through ``spec.envoy.listen_port`` needs. TimeoutError
    naming which of the two did not come."""
    admin = spec.envoy.admin_port
    wait_until(lambda: healthy_hosts(admin, cluster) == hosts, timeout_s, f"healthy {sorted(hosts)} in {cluster}")
    wait_until(lambda: listening(admin, spec.envoy.listen_port), timeout_s,
               f"Envoy's listener on port {spec.envoy.listen_port}")
