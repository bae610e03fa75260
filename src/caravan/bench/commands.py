"""``caravan bench`` (run a load benchmark) and ``caravan bench compare`` (side by side).

Heavy imports (tritonclient, matplotlib) happen inside the commands so
``caravan --help`` stays fast. Bad options exit with code 2 and a message naming
the option; a run whose every request failed exits with code 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

bench_app = typer.Typer(
    name="bench",
    help="Load-benchmark a gRPC (Triton/KServe v2) inference endpoint: Envoy or a replica.",
    no_args_is_help=False,
    invoke_without_command=True,
)


def _fail(msg: str) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(2)


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
    poisson: Annotated[bool, typer.Option("--poisson/--constant", help="rate arrivals")] = True,
    max_concurrency: Annotated[
        int | None, typer.Option(help="cap in-flight requests (rate)")
    ] = None,
    requests: Annotated[
        str, typer.Option(help="measured requests per level: N or N1,N2,...")
    ] = "100",
    warmup: Annotated[int, typer.Option(help="warm-up requests per level (not measured)")] = 0,
    duration: Annotated[float | None, typer.Option(help="stop each level after S seconds")] = None,
    max_errors: Annotated[
        int | None, typer.Option(help="stop a level after N failed requests")
    ] = None,
    stream: Annotated[
        bool, typer.Option("--stream/--no-stream", help="stream=true or false, both over ModelStreamInfer")
    ] = True,
    timeout: Annotated[float, typer.Option(help="per-request timeout, s")] = 120.0,
    input_tokens: Annotated[int, typer.Option(help="synthetic prompt length mean (tokens)")] = 128,
    input_spread: Annotated[float, typer.Option(help="prompt length spread, fraction 0-1")] = 0.0,
    output_tokens: Annotated[int, typer.Option(help="max_tokens mean")] = 128,
    output_spread: Annotated[float, typer.Option(help="max_tokens spread, fraction 0-1")] = 0.0,
    prompts: Annotated[
        Path | None, typer.Option(help='JSONL: {"prompt": ..., "max_tokens": N}')
    ] = None,
    turns: Annotated[
        int, typer.Option(help="turns per session (>1: multi-turn, sent in the session header)")
    ] = 1,
    seed: Annotated[int, typer.Option(help="seed: same seed, same requests")] = 0,
    slo: Annotated[list[str] | None, typer.Option(help="SLO for goodput, e.g. ttft_ms=500")] = None,
    sampling: Annotated[str, typer.Option(help="extra sampling_parameters JSON")] = "{}",
    count_tokens: Annotated[bool, typer.Option(help="ask for num_*_tokens outputs")] = True,
    spec: Annotated[
        Path | None, typer.Option(help="platform spec: header names come from it; recorded in metadata")
    ] = None,
    model_header: Annotated[
        str | None, typer.Option(help="header Envoy routes on (default: --spec's, else x-model)")
    ] = None,
    session_header: Annotated[
        str | None, typer.Option(help="header Envoy hashes on (default: --spec's, else x-session-id)")
    ] = None,
    out: Annotated[Path, typer.Option(help="output directory")] = Path("bench-results"),
    plot: Annotated[bool, typer.Option(help="write bench.png")] = True,
    progress: Annotated[bool, typer.Option(help="live progress bar")] = True,
    tls_ca: Annotated[
        Path | None, typer.Option(help="PEM CA of the endpoint: connect over TLS")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM client certificate (mTLS)")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM client key (mTLS)")] = None,
    api_key_file: Annotated[
        Path | None, typer.Option(help="file holding the API key (else $CARAVAN_API_KEY)")
    ] = None,
    api_key_header: Annotated[str, typer.Option(help="header carrying the API key")] = "x-api-key",
) -> None:
    """Run a benchmark: `caravan bench --url HOST:PORT --model M --concurrency 1,5,10`.

    Writes OUT/bench.json (summary, every record, metadata), OUT/records.csv,
    OUT/summary.csv and OUT/bench.png, and prints the reference table.
    """
    if ctx.invoked_subcommand is not None:
        return
    if not url or not model:
        raise _fail("--url HOST:PORT and --model NAME are required")
    opts = dict(locals())
    opts.pop("ctx")
    raise typer.Exit(_run(opts))


def _run(o: dict[str, Any]) -> int:
    import json

    from caravan.bench import arrivals, dataset, loop, meta, plots, report, results, runner, stats
    from caravan.bench.progress import RichProgress
    from caravan.bench.triton import Target
    from caravan.logs import setup_logging

    setup_logging("bench")
    try:
        limits = arrivals.Limits(1, o["warmup"], o["duration"], o["max_errors"])
        levels = arrivals.build_levels(o["concurrency"], o["rate"], o["poisson"], o["requests"],
                                       limits, o["max_concurrency"])
        entries: tuple[dataset.PromptEntry, ...] = ()
        if o["prompts"] is not None:
            path: Path = o["prompts"]
            entries = dataset.parse_jsonl(path.read_text().splitlines(), str(path))
        workload = dataset.Workload(
            o["seed"], dataset.Lengths(o["input_tokens"], o["input_spread"]),
            dataset.Lengths(o["output_tokens"], o["output_spread"]), entries, o["turns"],
        )
        slos = [stats.parse_slo(s) for s in o["slo"] or []]
        sampling = json.loads(o["sampling"])
        if not isinstance(sampling, dict):
            raise ValueError(f"--sampling: expected a JSON object, got {o['sampling']!r}")
        model_header, session_header = header_names(
            o["spec"], o["model"], o["model_header"], o["session_header"])
        target = Target(
            o["url"], o["stream"], o["timeout"], o["count_tokens"], sampling,
            tls_ca=_path(o["tls_ca"]), tls_cert=_path(o["tls_cert"]), tls_key=_path(o["tls_key"]),
            api_key=_api_key(o["api_key_file"]), api_key_header=o["api_key_header"],
            model_header=model_header, session_header=session_header,
        )
    except OSError as exc:
        raise _fail(f"--prompts {o['prompts']}: {exc.strerror}") from None
    except (ValueError, json.JSONDecodeError) as exc:
        raise _fail(str(exc)) from None
    info = meta.run_meta(
        url=o["url"], model=o["model"], stream=str(o["stream"]), spec=str(o["spec"] or ""),
        load=", ".join(lv.label for lv in levels), seed=str(o["seed"]),
        workload=_describe(o), slos=", ".join(f"{s.metric}<={s.limit_ms:g}" for s in slos),
        model_header=target.model_header, session_header=target.session_header,
    )
    console = _console()
    sink = RichProgress() if o["progress"] else None

    async def go() -> results.SweepResult:
        return await runner.run_sweep(target, o["model"], levels, workload, sink, slos, info)

    if sink is not None:
        with sink:
            result = loop.run(go())
    else:
        result = loop.run(go())
    console.print(report.reference_table(result))
    out: Path = o["out"]
    results.write_json(result, out / "bench.json")
    rows = results.write_records_csv(result, out / "records.csv")
    results.write_summary_csv(result, out / "summary.csv")
    written = [out / "bench.json", out / "records.csv", out / "summary.csv"]
    if o["plot"]:
        written.append(plots.plot_sweep(result, out / "bench.png"))
    console.print(f"wrote {', '.join(map(str, written))} ({rows} request rows)")
    total_ok = sum(lv.summary.ok for lv in result.levels)
    return 0 if total_ok else 1


def header_names(
    spec_path: Path | None, model: str, model_header: str | None, session_header: str | None
) -> tuple[str, str]:
    """``(model header, session header)`` for the requests: each flag given wins; else
    the spec's ``envoy.model_header`` and ``model``'s ``routing.session_header`` (the
    default model's when the spec has no ``model``: Envoy refuses that model anyway);
    else ``x-model`` / ``x-session-id``. The spec is read only when a flag is missing.
    Raises ValueError naming ``--spec`` when it cannot be read or is invalid."""
    if spec_path is None or (model_header and session_header):
        return model_header or "x-model", session_header or "x-session-id"
    from caravan.spec import SpecError, load_spec

    try:
        spec = load_spec(spec_path)
    except OSError as exc:
        raise ValueError(f"--spec {spec_path}: {exc.strerror}") from None
    except SpecError as exc:
        raise ValueError(f"--spec {exc}") from None
    served = next((m for m in spec.models if m.name == model), spec.default)
    return (model_header or spec.envoy.model_header,
            session_header or served.routing.session_header)


def _path(p: Path | None) -> str | None:
    return None if p is None else str(p)


def _api_key(path: Path | None) -> str:
    """The API key from ``--api-key-file`` or ``$CARAVAN_API_KEY`` ("" when neither);
    raises ValueError naming the option (never the key)."""
    import os

    if path is None:
        return os.environ.get("CARAVAN_API_KEY", "").strip()
    try:
        key = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"--api-key-file {path}: {exc.strerror}") from None
    if not key:
        raise ValueError(f"--api-key-file {path}: the file is empty")
    return key


def _console() -> Any:
    """stdout console; 160 columns when not a terminal (files, pipes, CI logs)."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160)


def _describe(o: dict[str, Any]) -> str:
    if o["prompts"] is not None:
        src = f"prompts={o['prompts']}"
    else:
        src = f"synthetic in={o['input_tokens']}±{o['input_spread']:g}"
    return f"{src} out={o['output_tokens']}±{o['output_spread']:g} turns={o['turns']}"


@bench_app.command("compare")
def compare(
    runs: Annotated[list[Path], typer.Argument(help="bench.json files (first = baseline)")],
    labels: Annotated[str | None, typer.Option(help="comma-separated run labels")] = None,
    plot: Annotated[Path | None, typer.Option(help="write an overlay PNG here")] = None,
) -> None:
    """Print runs side by side with ratios to the first; optionally plot them together."""

    from caravan.bench import compare as cmp
    from caravan.bench import plots, results

    try:
        loaded = [results.read_json(p) for p in runs]
    except OSError as exc:
        raise _fail(f"{exc.filename}: {exc.strerror}") from None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    names = labels.split(",") if labels else [_default_label(p, runs) for p in runs]
    if len(names) != len(runs):
        raise _fail(f"--labels: got {len(names)} labels for {len(runs)} runs")
    console = _console()
    console.print(cmp.compare_table(loaded, names))
    if plot is not None:
        plots.plot_runs(loaded, names, plot)
        console.print(f"wrote {plot}")


def _default_label(p: Path, runs: list[Path]) -> str:
    """The file stem, or its directory's name when every file has the same stem."""
    stems = {r.stem for r in runs}
    return p.parent.name if len(stems) < len(runs) and p.parent.name else p.stem


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
