"""How a local replica (a ``tritonserver`` process) is described and started: the one
place its binary, files, argv and environment are written down. ``caravan replica``,
``caravan up``, the tests and the benchmarks all start replicas through ``ReplicaPlan``.

The binary and the Python backend come from NVIDIA's ``nvidia-pytriton`` wheel
(Triton 2.51; nothing is downloaded at run time). The server runs with explicit model
control (the vLLM backend's health check needs it), binds only ``host``, and serves
gRPC and metrics, no HTTP. Real tritonserver opens its ports only after its startup
model has loaded (so ``load_delay_s`` keeps the gRPC port closed).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from caravan.local.process import ChildProcess
from caravan.render.triton import KEEPALIVE_ARGS
from caravan.simulator.engine import EngineConfig
from caravan.spec import EngineArgs, ModelSpec
from caravan.triton.repository import write_backends, write_model
from caravan.triton.settings import FAULT_DEAD, FAULT_HANG, FAULT_NONE, SimulatorSettings

FAULT_FILE = "engine-fault"


@dataclass(frozen=True)
class ServerTls:
    """tritonserver's gRPC TLS: server cert and key; ``client_ca`` requires client certs."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def args(self) -> list[str]:
        out = ["--grpc-use-ssl=true", f"--grpc-server-cert={self.cert}", f"--grpc-server-key={self.key}"]
        if self.client_ca is not None:
            out += [f"--grpc-root-cert={self.client_ca}", "--grpc-use-ssl-mutual=true"]
        return out


_RUN = SimulatorSettings()  # the simulated engine's run settings, with their defaults


@dataclass(frozen=True)
class ReplicaOptions:
    """What varies between local runs of a model's replica (the spec fixes the rest;
    ``caravan replica``'s flags take their defaults from here). ``time_scale``,
    ``stream_interval_ms``, ``load_delay_s`` and ``fixed_ms_per_token`` are the
    ``SimulatorSettings`` the model reads (defaults from there); ``exit_timeout_s``
    bounds the drain on SIGTERM (tritonserver's ``--exit-timeout-secs``)."""

    time_scale: float = _RUN.time_scale
    stream_interval_ms: float = _RUN.stream_interval_ms
    load_delay_s: float = _RUN.load_delay_s
    fixed_ms_per_token: float | None = _RUN.fixed_ms_per_token
    exit_timeout_s: int = 30
    host: str = "127.0.0.1"
    tls: ServerTls | None = None
    log_verbose: int = 0


def bare_model(name: str) -> ModelSpec:
    """A model spec with every default, for a replica started without a platform spec."""
    return ModelSpec(name=name, engine=EngineArgs(model="simulated"))


@dataclass(frozen=True)
class ReplicaPlan:
    """One replica: ``model`` served on ``grpc_port`` / ``metrics_port`` from files under
    ``state_dir`` (created by ``prepare``)."""

    state_dir: Path
    model: ModelSpec
    grpc_port: int
    metrics_port: int
    options: ReplicaOptions = field(default_factory=ReplicaOptions)

    @property
    def fault_file(self) -> Path:
        """Create this file to kill the simulated engine (the process lives on); see
        ``inject_fault`` for the other modes."""
        return self.state_dir / FAULT_FILE

    def inject_fault(self, mode: str) -> None:
        """Test seam (``caravan.triton.settings.fault_mode``): ``FAULT_DEAD`` kills the
        engine, ``FAULT_HANG`` makes it hang (health and ModelReady answer, inference
        never does), ``FAULT_NONE`` ends a hang (a dead engine stays dead). The file is
        replaced atomically, so the model never reads it half-written."""
        if mode == FAULT_NONE:
            self.fault_file.unlink(missing_ok=True)
            return
        if mode not in (FAULT_DEAD, FAULT_HANG):
            raise ValueError(f"fault mode {mode!r}: expected {FAULT_NONE!r}, {FAULT_DEAD!r} or {FAULT_HANG!r}")
        tmp = self.fault_file.with_name(self.fault_file.name + ".tmp")
        tmp.write_text(mode if mode == FAULT_HANG else "")
        tmp.replace(self.fault_file)

    @property
    def endpoint(self) -> str:
        return f"{self.options.host}:{self.grpc_port}"

    def settings(self) -> SimulatorSettings:
        o = self.options
        return SimulatorSettings(
            engine=EngineConfig.from_spec(self.model.simulator, self.model.engine),
            time_scale=o.time_scale, stream_interval_ms=o.stream_interval_ms,
            load_delay_s=o.load_delay_s, fixed_ms_per_token=o.fixed_ms_per_token,
            fault_file=str(self.fault_file))

    def prepare(self) -> tuple[list[str], dict[str, str]]:
        """Write the model repository and backends; return (argv, env). Raises
        FileNotFoundError when nvidia-pytriton is missing, ValueError on bad options."""
        settings = self.settings()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.fault_file.unlink(missing_ok=True)
        models = write_model(self.state_dir / "models", self.model, settings)
        backends = write_backends(self.state_dir / "backends", pytriton_dir())
        return self.argv(models, backends), server_env()

    def argv(self, models: Path, backends: Path) -> list[str]:
        o = self.options
        args = [
            str(pytriton_dir() / "bin" / "tritonserver"),
            f"--model-repository={models}", f"--backend-directory={backends}",
            "--model-control-mode=explicit", f"--load-model={self.model.name}",
            "--allow-http=false", f"--grpc-address={o.host}", f"--grpc-port={self.grpc_port}",
            "--allow-metrics=true", f"--metrics-address={o.host}", f"--metrics-port={self.metrics_port}",
            f"--exit-timeout-secs={o.exit_timeout_s}", f"--log-verbose={o.log_verbose}",
            *KEEPALIVE_ARGS,
        ]
        return args + (o.tls.args() if o.tls is not None else [])

    def start(self, log_path: Path | None = None) -> ChildProcess:
        """Start tritonserver as an owned child (its log to ``log_path``)."""
        argv, env = self.prepare()
        return ChildProcess(f"replica-{self.model.name}-{self.grpc_port}", argv, log_path, env).start()


def pytriton_dir() -> Path:
    """The ``tritonserver`` directory inside the installed nvidia-pytriton wheel.
    Raises FileNotFoundError with the fix when the wheel is missing."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("nvidia-pytriton is not installed (pip install nvidia-pytriton)")
    return Path(spec.origin).parent / "tritonserver"


def server_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for tritonserver: the wheel's bundled libraries on LD_LIBRARY_PATH,
    this interpreter's bin first on PATH (the stub imports this Python's packages)."""
    env = dict(os.environ if base is None else base)
    libs = str(pytriton_dir().parent.parent / "nvidia_pytriton.libs")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libs, env.get("LD_LIBRARY_PATH", "")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return env
