"""CLI: ``caravan replica`` runs one local replica: the real ``tritonserver`` serving the
simulated vLLM engine for one model of a spec (or a bare model with every default).

It writes the model repository under ``--state-dir`` and then *becomes* tritonserver
(exec), so signals reach Triton directly: SIGTERM drains (requests in flight finish,
bounded by ``--exit-timeout-s``), SIGKILL is a crash. Create the printed fault file to
kill the simulated engine while the process lives (the vLLM backend's dead-engine path).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from caravan.triton.launcher import ReplicaOptions

if TYPE_CHECKING:
    from caravan.spec import ModelSpec
    from caravan.triton.launcher import ServerTls

DEFAULT = ReplicaOptions()  # every flag's default is ReplicaOptions'


def register(app: typer.Typer) -> None:
    """Add the ``replica`` command to ``app``."""
    app.command("replica")(replica)


def replica(
    model: str = typer.Option(..., "--model", help="model name served (a model of --spec, or any name)"),
    port: int = typer.Option(..., "--port", help="gRPC port (KServe v2 + grpc.health.v1)"),
    metrics_port: int = typer.Option(..., "--metrics-port", help="Prometheus /metrics port"),
    spec: Path | None = typer.Option(None, "--spec", help="platform spec: engine and simulator settings"),
    host: str = typer.Option(DEFAULT.host, "--host", help="address to bind"),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="where the model repository goes"),
    time_scale: float = typer.Option(DEFAULT.time_scale, "--time-scale",
                                     help="multiplies every simulated duration (> 0)"),
    stream_interval_ms: float = typer.Option(DEFAULT.stream_interval_ms, "--stream-interval-ms",
                                             help="real ms per streamed chunk (0 = one per token)"),
    load_delay_s: float = typer.Option(DEFAULT.load_delay_s, "--load-delay-s",
                                       help="seconds loading (ports closed)"),
    fixed_ms_per_token: float | None = typer.Option(
        DEFAULT.fixed_ms_per_token, "--fixed-ms-per-token",
        help="bypass the batching engine: answer each request after this many real ms per token"),
    exit_timeout_s: int = typer.Option(DEFAULT.exit_timeout_s, "--exit-timeout-s",
                                       help="max seconds to drain on SIGTERM"),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate: gRPC over TLS"),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key for --tls-cert"),
    tls_client_ca: Path | None = typer.Option(None, "--tls-client-ca", help="require client certs (mTLS)"),
) -> None:
    """Run a local replica: real tritonserver with the simulated vLLM engine."""
    from caravan.triton.launcher import ReplicaPlan

    try:
        opts = ReplicaOptions(time_scale=time_scale, stream_interval_ms=stream_interval_ms,
                              load_delay_s=load_delay_s, fixed_ms_per_token=fixed_ms_per_token,
                              exit_timeout_s=exit_timeout_s, host=host,
                              tls=_tls(tls_cert, tls_key, tls_client_ca))
        plan = ReplicaPlan(state_dir or Path(tempfile.mkdtemp(prefix=f"caravan-{model}-")),
                           _model(spec, model), port, metrics_port, opts)
        argv, env = plan.prepare()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    except FileNotFoundError as exc:
        typer.echo(f"caravan replica: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"caravan replica: {model} on {plan.endpoint}; kill the engine: touch {plan.fault_file}",
               err=True)
    os.execve(argv[0], argv, env)


def _model(spec: Path | None, name: str) -> ModelSpec:
    from caravan.spec import SpecError, load_spec
    from caravan.triton.launcher import bare_model

    if spec is None:
        return bare_model(name)
    try:
        platform = load_spec(spec)
    except (SpecError, OSError) as exc:
        raise typer.BadParameter(str(exc), param_hint="'--spec'") from None
    names = [m.name for m in platform.models]
    if name not in names:
        raise typer.BadParameter(f"{name!r} is not a model of {spec} ({', '.join(names)})", param_hint="'--model'")
    return platform.model(name)


def _tls(cert: Path | None, key: Path | None, client_ca: Path | None) -> ServerTls | None:
    from caravan.triton.launcher import ServerTls

    if cert is None and key is None:
        if client_ca is not None:
            raise typer.BadParameter("needs --tls-cert and --tls-key", param_hint="'--tls-client-ca'")
        return None
    if cert is None or key is None:
        missing = "--tls-cert" if cert is None else "--tls-key"
        raise typer.BadParameter("--tls-cert and --tls-key go together", param_hint=f"'{missing}'")
    for path, flag in ((cert, "--tls-cert"), (key, "--tls-key"), (client_ca, "--tls-client-ca")):
        if path is not None and not path.is_file():
            raise typer.BadParameter(f"cannot read {path}", param_hint=f"'{flag}'")
    return ServerTls(cert.resolve(), key.resolve(), client_ca.resolve() if client_ca else None)
