"""``caravan bench`` (run a load benchmark) and ``caravan bench compare`` (side by side).

Thin: options -> ``BenchConfig`` -> ``caravan.bench.session`` -> exit code. Bad
options exit with code 2 and a message naming the option; a run whose every request
failed exits with code 1. Imported only when a ``bench`` command runs (``caravan.cli``
registers it lazily), so its imports do not slow ``caravan --help``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from caravan.bench import compare as cmp
from caravan.bench import plots, session
from caravan.bench.config import BenchConfig
from caravan.errors import ConfigError
from caravan.exits import FAILED, errors_exit
from caravan.logs import setup_logging

bench_app = typer.Typer(
    name="bench",
    help="Load-benchmark a gRPC (Triton/KServe v2) inference endpoint: Envoy or a replica.",
    no_args_is_help=False,
    invoke_without_command=True,
)


def _default(name: str) -> Any:
    """``BenchConfig``'s default for option ``name`` (defaults are written there once)."""
    return BenchConfig.model_fields[name].default


@bench_app.callback()
def bench(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="HOST:PORT of Envoy or a replica")] = None,
    model: Annotated[str | None, typer.Option(help="model name (also sent in the model header)")] = None,
    concurrency: Annotated[
        str | None, typer.Option(help="fixed concurrency sweep, e.g. 1,5,10")
    ] = None,
    rate: Annotated[
        str | None, typer.Option(help="request-rate sweep in req/s, e.g. 1,2,4")
    ] = None,
    poisson: Annotated[bool, typer.Option("--poisson/--constant", help="rate arrivals")] = _default("poisson"),
    max_concurrency: Annotated[
        int | None, typer.Option(help="cap in-flight requests (rate, trace)")
    ] = None,
    requests: Annotated[
        str | None, typer.Option(help="measured requests per level: N or N1,N2,... "
                                      "(default 100; trace: all its lines)")
    ] = None,
    warmup: Annotated[int, typer.Option(help="warm-up requests per level (not measured)")] = _default("warmup"),
    duration: Annotated[float | None, typer.Option(help="stop each level after S seconds")] = None,
    max_errors: Annotated[
        int | None, typer.Option(help="stop a level after N failed requests")
    ] = None,
    stream: Annotated[
        bool, typer.Option("--stream/--no-stream", help="stream=true or false, both over ModelStreamInfer")
    ] = _default("stream"),
    timeout: Annotated[float, typer.Option(help="per-request timeout, s")] = _default("timeout"),
    input_tokens: Annotated[int, typer.Option(
        help="synthetic prompt length mean (tokens); the question / message of other workloads")
    ] = _default("input_tokens"),
    input_spread: Annotated[float, typer.Option(help="prompt length spread, fraction 0-1")] = _default("input_spread"),
    output_tokens: Annotated[int, typer.Option(help="max_tokens mean")] = _default("output_tokens"),
    output_spread: Annotated[float, typer.Option(help="max_tokens spread, fraction 0-1")] = _default("output_spread"),
    prompts: Annotated[
        Path | None, typer.Option(help='JSONL: {"prompt": ..., "max_tokens": N} (unique)')
    ] = None,
    turns: Annotated[
        int, typer.Option(help="turns per session (>1: multi-turn, sent in the session header; unique)")
    ] = _default("turns"),
    seed: Annotated[int, typer.Option(help="seed: same seed, same requests")] = _default("seed"),
    slo: Annotated[list[str] | None, typer.Option(help="SLO for goodput, e.g. ttft_ms=500")] = None,
    sampling: Annotated[str, typer.Option(help="extra sampling_parameters JSON")] = "{}",
    count_tokens: Annotated[bool, typer.Option(help="ask for num_*_tokens outputs")] = _default("count_tokens"),
    spec: Annotated[
        Path | None, typer.Option(help="platform spec: header names come from it; recorded in metadata")
    ] = None,
    model_header: Annotated[
        str | None, typer.Option(help="header Envoy routes on (default: --spec's, else x-model)")
    ] = None,
    session_header: Annotated[
        str | None, typer.Option(help="header Envoy hashes on (default: --spec's, else x-session-id)")
    ] = None,
    out: Annotated[Path, typer.Option(help="output directory")] = _default("out"),
    plot: Annotated[bool, typer.Option(help="write bench.png")] = _default("plot"),
    progress: Annotated[bool, typer.Option(help="live progress bar")] = _default("progress"),
    tls_ca: Annotated[
        Path | None, typer.Option(help="PEM CA of the endpoint: connect over TLS")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM client certificate (mTLS)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM client key (mTLS)")] = None,
    api_key_file: Annotated[
        Path | None, typer.Option(help="file holding the API key (else $CARAVAN_API_KEY)")
    ] = None,
    api_key_header: Annotated[str, typer.Option(help="header carrying the API key")] = _default("api_key_header"),
    workload: Annotated[str, typer.Option(
        help="unique | shared-prefix | multi-turn | trace (README: Workloads)")
    ] = _default("workload").value,
    trace: Annotated[Path | None, typer.Option(help="Mooncake trace JSONL (--workload trace)")] = None,
    trace_speedup: Annotated[float, typer.Option(
        help="trace: send at the recorded times / this")] = _default("trace_speedup"),
    trace_block_tokens: Annotated[int, typer.Option(
        help="trace: words per hash id (Mooncake: 512 tokens)")] = _default("trace_block_tokens"),
    prefixes: Annotated[int, typer.Option(
        help="shared-prefix: documents / system prompts")] = _default("prefixes"),
    prefix_tokens: Annotated[int, typer.Option(
        help="shared-prefix: words in each")] = _default("prefix_tokens"),
    conversations: Annotated[int, typer.Option(
        help="multi-turn: conversations in flight (>= concurrency)")] = _default("conversations"),
    turns_mean: Annotated[float, typer.Option(
        help="multi-turn: mean turns per conversation (ShareGPT: 3.51)")] = _default("turns_mean"),
    turns_max: Annotated[int, typer.Option(
        help="multi-turn: most turns in a conversation")] = _default("turns_max"),
    max_context: Annotated[int, typer.Option(
        help="multi-turn: a conversation ends before a turn longer than this (tokens; the "
             "simulator's max_model_len)")] = _default("max_context"),
) -> None:
    """Run a benchmark: `caravan bench --url HOST:PORT --model M --concurrency 1,5,10`.

    Writes OUT/bench.json (summary, every record, metadata), OUT/records.csv,
    OUT/summary.csv and OUT/bench.png, and prints the reference table.
    """
    if ctx.invoked_subcommand is not None:
        return
    with errors_exit("error"):
        if not url or not model:
            raise ConfigError("--url HOST:PORT and --model NAME are required")
        config = BenchConfig.from_options(
            url=url, model=model, concurrency=concurrency, rate=rate, poisson=poisson,
            max_concurrency=max_concurrency, requests=requests, warmup=warmup, duration=duration,
            max_errors=max_errors, stream=stream, timeout=timeout, input_tokens=input_tokens,
            input_spread=input_spread, output_tokens=output_tokens, output_spread=output_spread,
            prompts=prompts, turns=turns, seed=seed, slo=slo or [], sampling=sampling,
            count_tokens=count_tokens, spec=spec, model_header=model_header,
            session_header=session_header, out=out, plot=plot, progress=progress, tls_ca=tls_ca,
            tls_cert=tls_cert, tls_key=tls_key, api_key_file=api_key_file,
            api_key_header=api_key_header, workload=workload, trace=trace,
            trace_speedup=trace_speedup, trace_block_tokens=trace_block_tokens, prefixes=prefixes,
            prefix_tokens=prefix_tokens, conversations=conversations, turns_mean=turns_mean,
            turns_max=turns_max, max_context=max_context)
        plan = session.plan_bench(config)
    raise typer.Exit(_run(plan, config))


def _run(plan: session.SessionPlan, config: BenchConfig) -> int:
    """Run the session; 0 when any request succeeded, 1 when none did or an output
    could not be written."""
    setup_logging("bench")
    console = session.console()
    progress_to = Console(stderr=True) if config.progress else None
    try:
        result = session.run_session(plan, session.Outputs.in_directory(config.out, config.plot),
                                     console, progress_to)
    except OSError as exc:
        typer.echo(f"error: cannot write {exc.filename}: {exc.strerror}", err=True)
        return FAILED
    return 0 if session.succeeded(result)[1] else FAILED


@bench_app.command("compare")
def compare(
    runs: Annotated[list[Path], typer.Argument(help="bench.json files (first = baseline)")],
    labels: Annotated[str | None, typer.Option(help="comma-separated run labels")] = None,
    plot: Annotated[Path | None, typer.Option(help="write an overlay PNG here")] = None,
) -> None:
    """Print runs side by side with ratios to the first; optionally plot them together."""
    with errors_exit("error"):
        loaded, names = cmp.load_runs(runs, labels)
    console = session.console()
    console.print(cmp.compare_table(loaded, names))
    if plot is not None:
        plots.plot_runs(loaded, names, plot)
        console.print(f"wrote {plot}")


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
