"""CLI: ``caravan replica`` runs one simulated Triton+vLLM replica until SIGTERM/SIGINT
(then drains: in-flight requests finish, bounded by ``--drain-timeout-s``; exit 0).

Heavy imports (grpc, prometheus_client) happen inside the command so ``caravan --help``
stays fast.
"""

from __future__ import annotations

import typer

from caravan.spec import EngineArgs, SimulatorParams

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
    log_level: str = typer.Option("INFO", "--log-level"),
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
        )
    except ValueError as exc:
        flag = "--" + str(exc).split(":", 1)[0].replace("_", "-")
        raise typer.BadParameter(str(exc).split(": ", 1)[-1], param_hint=f"'{flag}'") from None
    import asyncio

    setup_logging("replica", log_level)
    try:
        asyncio.run(_run(config))
    except OSError as exc:
        typer.echo(f"caravan replica: {exc}", err=True)
        raise typer.Exit(1) from None


async def _run(config: object) -> None:
    import asyncio
    import signal

    from caravan.replica.config import ReplicaConfig
    from caravan.replica.server import Replica

    assert isinstance(config, ReplicaConfig)
    rep = Replica(config)
    await rep.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, rep.begin_drain)
    await rep.wait()
