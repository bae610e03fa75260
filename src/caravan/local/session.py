"""A local session: the ``LocalStack`` plus, optionally, the autoscaler running in-process
against it (``FleetScaleTarget`` over the stack's ``ReplicaFleet`` methods).

Used by ``caravan up`` and ``caravan demo``. Not thread-safe: one owner.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from caravan.local.supervisor import LocalPorts, LocalStack, StackOptions
from caravan.spec import PlatformSpec

log = logging.getLogger(__name__)


@dataclass
class LocalSession:
    stack: LocalStack
    autoscale: bool = False
    _thread: threading.Thread | None = None
    _stop: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _autoscaler_error: list[BaseException] = field(default_factory=list)

    @classmethod
    def create(cls, spec: PlatformSpec, state_dir: Path | None, time_scale: float | None,
               prometheus: bool, autoscale: bool, ports: LocalPorts | None = None) -> LocalSession:
        options = StackOptions(
            time_scale=spec.local.time_scale if time_scale is None else time_scale,
            prometheus=prometheus or autoscale,
        )
        directory = Path(spec.local.state_dir if state_dir is None else state_dir)
        stack = LocalStack(spec, directory, ports or LocalPorts.from_spec(spec), options)
        return cls(stack, autoscale)

    def start(self) -> None:
        self.stack.start()
        if self.autoscale:
            self._start_autoscaler()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
        self.stack.stop()

    def _start_autoscaler(self) -> None:
        from caravan.local.autoscale import run_local_autoscaler

        if self.stack.prometheus_url is None:
            raise RuntimeError("the autoscaler needs Prometheus: apt-get install -y prometheus")
        ready = threading.Event()

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            self._stop = asyncio.Event()
            ready.set()
            try:
                self._loop.run_until_complete(run_local_autoscaler(self.stack, self._stop))
            except BaseException as exc:  # surfaced by banner()/demo
                log.exception("autoscaler stopped")
                self._autoscaler_error.append(exc)

        self._thread = threading.Thread(target=main, name="autoscaler", daemon=True)
        self._thread.start()
        ready.wait(5)

    def banner(self) -> str:
        s = self.stack
        models = ", ".join(f"{m.name} ({s.counts(m.name)[0]} replicas)" for m in s.spec.models)
        lines = [
            "[bold green]Caravan is serving[/bold green]",
            f"  gRPC inference endpoint (Envoy): [bold]{s.endpoint}[/bold]   models: {models}",
            f"  Envoy admin: http://127.0.0.1:{s.ports.envoy_admin}   "
            f"xDS: 127.0.0.1:{s.ports.xds} (admin http://127.0.0.1:{s.ports.xds_admin})",
            f"  Prometheus: {s.prometheus_url or 'not running'}   logs: {s.state_dir / 'logs'}",
            f"  autoscaler: {'on' if self.autoscale else 'off'}",
            *([f"  TLS: throwaway local CA and certificates in {s.pki_dir} (ca.pem, client.pem/.key)"]
              if s.pki_dir is not None else []),
            "  try it:  caravan bench --url "
            f"{s.endpoint} --model {s.spec.default.name} --concurrency 4 --requests 20",
        ]
        return "\n".join(lines)
