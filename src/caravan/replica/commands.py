"""CLI: ``caravan replica`` runs one simulated Triton+vLLM replica until SIGTERM/SIGINT
(then drains: in-flight requests finish, bounded by ``--drain-timeout-s``; exit 0).

Heavy imports (grpc, prometheus_client) happen inside the command so ``caravan --help``
stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from caravan.spec import EngineArgs, SimulatorParams

if TYPE_CHECKING:
    import grpc

_SIM = SimulatorParams.model_validate({})
_ENGINE_DEFAULTS = EngineArgs.model_fields


def register(app: typer.Typer) -> None:
    """Add the ``replica`` command to ``app``."""
    app.command("replica")(replica)


def replica(
    model: str = typer.Option(
        ..., "--model", help="model name served (requests for others get NOT_FOUND)"
    ),
    port: int = typer.Option(..., "--port", help="gRPC port (KServe v2 + grpc.health.v1)"),
    metrics_port: int = typer.Option(..., "--metrics-port", help="Prometheus /metrics port"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind"),
    replica_id: str = typer.Option(
        "", "--replica-id", help="id reported in responses [default: MODEL-PORT]"
    ),
    time_scale: float = typer.Option(
        1.0, "--time-scale", help="multiplies every simulated duration (> 0)"
    ),
    max_num_seqs: int = typer.Option(
        _ENGINE_DEFAULTS["max_num_seqs"].default, "--max-num-seqs", help="max sequences per batch"
    ),
    kv_cache_tokens: int = typer.Option(
        _SIM.kv_cache_tokens, "--kv-cache-tokens", help="KV-cache token budget"
    ),
    max_model_len: int = typer.Option(
        _ENGINE_DEFAULTS["max_model_len"].default,
        "--max-model-len",
        help="max prompt + output tokens per request",
    ),
    decode_ms_per_step: float = typer.Option(
        _SIM.decode_ms_per_step,
        "--decode-ms-per-step",
        help="decode step cost at batch 1, simulated ms",
    ),
    decode_ms_per_seq: float = typer.Option(
        _SIM.decode_ms_per_seq,
        "--decode-ms-per-seq",
        help="extra step cost per additional sequence, simulated ms",
    ),
    prefill_ms_per_token: float = typer.Option(
        _SIM.prefill_ms_per_token,
        "--prefill-ms-per-token",
        help="prefill cost per prompt token, simulated ms",
    ),
    mean_output_tokens: int = typer.Option(
        _SIM.mean_output_tokens,
        "--mean-output-tokens",
        help="mean output length when max_tokens is not given",
    ),
    load_delay_s: float = typer.Option(
        0.0, "--load-delay-s", help="seconds NOT_SERVING before ready"
    ),
    stream_interval_ms: float = typer.Option(
        50.0, "--stream-interval-ms", help="real ms per streamed chunk (0 = one per token)"
    ),
    max_input_bytes: int = typer.Option(
        1 << 20, "--max-input-bytes", help="largest accepted input tensor"
    ),
    drain_timeout_s: float = typer.Option(
        30.0, "--drain-timeout-s", help="max seconds to drain on SIGTERM"
    ),
    fixed_ms_per_token: float | None = typer.Option(
        None, "--fixed-ms-per-token",
        help="bypass the batching engine: answer every request after exactly this many "
             "real ms per output token, each on its own (measures what a proxy adds; "
             "benchmarks/envoy_overhead.py)",
    ),
    log_level: str = typer.Option("INFO", "--log-level"),
    tls_cert: Path | None = typer.Option(
        None, "--tls-cert", help="PEM certificate: serve gRPC over TLS (with --tls-key)"
    ),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key for --tls-cert"),
    tls_client_ca: Path | None = typer.Option(
        None, "--tls-client-ca", help="require client certificates signed by this CA (mTLS)"
    ),
) -> None:
    """Run a simulated Triton+vLLM replica (KServe v2 gRPC, health, Prometheus metrics)."""
    from caravan.logs import setup_logging
    from caravan.replica.config import ReplicaConfig
    from caravan.replica.engine import EngineConfig

    try:
        engine = EngineConfig(
            max_num_seqs=max_num_seqs,
            kv_cache_tokens=kv_cache_tokens,
            max_model_len=max_model_len,
            decode_ms_per_step=decode_ms_per_step,
            decode_ms_per_seq=decode_ms_per_seq,
            prefill_ms_per_token=prefill_ms_per_token,
        )
        config = ReplicaConfig(
            model=model,
            port=port,
            metrics_port=metrics_port,
            host=host,
            replica_id=replica_id,
            time_scale=time_scale,
            engine=engine,
            mean_output_tokens=mean_output_tokens,
            load_delay_s=load_delay_s,
            stream_interval_ms=stream_interval_ms,
            max_input_bytes=max_input_bytes,
            drain_timeout_s=drain_timeout_s,
            fixed_ms_per_token=fixed_ms_per_token,
        )
    except ValueError as exc:
        flag = "--" + str(exc).split(":", 1)[0].replace("_", "-")
        raise typer.BadParameter(str(exc).split(": ", 1)[-1], param_hint=f"'{flag}'") from None
    import asyncio

    creds = _credentials(tls_cert, tls_key, tls_client_ca)
    setup_logging("replica", log_level)
    try:
        asyncio.run(_run(config, creds))
    except OSError as exc:
        typer.echo(f"caravan replica: {exc}", err=True)
        raise typer.Exit(1) from None


def _credentials(
    cert: Path | None, key: Path | None, client_ca: Path | None
) -> grpc.ServerCredentials | None:
    """grpc server credentials from the TLS flags (None: plaintext). Bad flags raise
    typer.BadParameter naming the flag."""
    if cert is None and key is None:
        if client_ca is not None:
            raise typer.BadParameter("needs --tls-cert and --tls-key", param_hint="'--tls-client-ca'")
        return None
    if cert is None or key is None:
        missing = "--tls-cert" if cert is None else "--tls-key"
        raise typer.BadParameter("--tls-cert and --tls-key go together", param_hint=f"'{missing}'")
    from caravan.replica.server import tls_credentials

    def read(path: Path, flag: str) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise typer.BadParameter(f"cannot read {path} ({exc.strerror})", param_hint=f"'{flag}'") from None

    ca = None if client_ca is None else read(client_ca, "--tls-client-ca")
    return tls_credentials(read(cert, "--tls-cert"), read(key, "--tls-key"), ca)


async def _run(config: object, credentials: grpc.ServerCredentials | None = None) -> None:
    import asyncio
    import signal

    from caravan.replica.config import ReplicaConfig
    from caravan.replica.server import Replica

    assert isinstance(config, ReplicaConfig)
    rep = Replica(config, credentials=credentials)
    await rep.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, rep.begin_drain)
    await rep.wait()
