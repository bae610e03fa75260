"""One bench session: run the levels, print the table, write JSON/CSV, plot.

``caravan bench`` and ``caravan demo`` both run through ``run_session``::

    plan = plan_bench(config)                      # BenchConfig -> SessionPlan (reads files)
    result = run_session(plan, outputs, console)   # SweepResult; files written

``plan_bench`` reads the files the options name (``--prompts``, ``--trace``,
``--spec``, ``--api-key-file``) and raises ``ConfigError`` naming the option;
``caravan demo`` builds its ``SessionPlan`` from the running stack instead.
``run_session`` never raises for failed requests (they are counted per level); it
raises OSError when an output cannot be written. Runs its own event loop: call it
from synchronous code, one at a time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, RenderableType

from caravan.bench import dataset, loop, meta, plots, report, results, runner, workloads
from caravan.bench.arrivals import LoadLevel
from caravan.bench.config import BenchConfig
from caravan.bench.progress import RichProgress
from caravan.bench.stats import Slo
from caravan.bench.triton import Target
from caravan.errors import ConfigError
from caravan.spec import SpecError, load_spec, names


@dataclass(frozen=True)
class SessionPlan:
    """What to send where: ``levels`` of ``source``'s requests to ``model`` at ``target``."""

    target: Target
    model: str
    levels: tuple[LoadLevel, ...]
    source: runner.RequestSource
    slos: tuple[Slo, ...] = ()
    meta: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outputs:
    """Where results go. ``records_csv``/``png`` None: not written. ``table_title``:
    the reference table's title ("" for its default); ``extra``: more renderables
    printed after it (``caravan demo``'s simulated-time table)."""

    json: Path
    summary_csv: Path
    records_csv: Path | None = None
    png: Path | None = None
    plot_title: str = ""
    table_title: str = ""
    extra: Callable[[results.SweepResult], Sequence[RenderableType]] | None = None

    @classmethod
    def in_directory(cls, out: Path, plot: bool = True) -> Outputs:
        """``caravan bench``'s layout: OUT/bench.json, records.csv, summary.csv, bench.png."""
        return cls(out / "bench.json", out / "summary.csv", out / "records.csv",
                   out / "bench.png" if plot else None)


def run_session(plan: SessionPlan, outputs: Outputs, console: Console,
                progress_to: Console | None = None) -> results.SweepResult:
    """Run every level (a live progress bar on ``progress_to`` unless None), print
    the reference table (and ``outputs.extra``) on ``console``, write the outputs,
    print what was written."""
    sink = RichProgress(progress_to) if progress_to is not None else None

    async def go() -> results.SweepResult:
        return await runner.run_sweep(plan.target, plan.model, plan.levels, plan.source, sink,
                                      plan.slos, plan.meta)

    if sink is not None:
        with sink:
            result = loop.run(go())
    else:
        result = loop.run(go())
    title = {"title": outputs.table_title} if outputs.table_title else {}
    console.print(report.reference_table(result, **title))
    for extra in outputs.extra(result) if outputs.extra else ():
        console.print(extra)
    console.print(f"wrote {_write(result, outputs)}")
    return result


def _write(result: results.SweepResult, outputs: Outputs) -> str:
    results.write_json(result, outputs.json)
    written = [outputs.json]
    rows = None
    if outputs.records_csv is not None:
        rows = results.write_records_csv(result, outputs.records_csv)
        written.append(outputs.records_csv)
    results.write_summary_csv(result, outputs.summary_csv)
    written.append(outputs.summary_csv)
    if outputs.png is not None:
        written.append(plots.plot_sweep(result, outputs.png, title=outputs.plot_title))
    tail = "" if rows is None else f" ({rows} request rows)"
    return ", ".join(map(str, written)) + tail


def succeeded(result: results.SweepResult) -> tuple[int, int]:
    """(requests sent, requests that succeeded) over every level."""
    return (sum(lv.summary.requests for lv in result.levels),
            sum(lv.summary.ok for lv in result.levels))


def plan_bench(config: BenchConfig) -> SessionPlan:
    """``caravan bench``'s plan; reads the files ``config`` names. ConfigError names
    the option whose file or value is unusable."""
    source, trace_length = _source(config)
    levels = config.levels(trace_length)
    model_header, session_header = header_names(
        config.spec, config.model, config.model_header, config.session_header)
    try:
        target = Target(
            config.url, config.stream, config.timeout, config.count_tokens, dict(config.sampling),
            tls_ca=_path(config.tls_ca), tls_cert=_path(config.tls_cert),
            tls_key=_path(config.tls_key), api_key=api_key(config.api_key_file, os.environ),
            api_key_header=config.api_key_header, model_header=model_header,
            session_header=session_header)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    info = meta.run_meta(
        url=config.url, model=config.model, stream=str(config.stream), spec=str(config.spec or ""),
        load=", ".join(lv.label for lv in levels), seed=str(config.seed),
        workload=config.describe(), slos=", ".join(f"{s.metric}<={s.limit_ms:g}" for s in config.slo),
        model_header=target.model_header, session_header=target.session_header)
    return SessionPlan(target, config.model, levels, source, config.slo, info)


def _source(config: BenchConfig) -> tuple[runner.RequestSource, int]:
    """The request source and the trace's length (0 when not a trace)."""
    prompts: tuple[dataset.PromptEntry, ...] = ()
    trace: tuple[workloads.TraceRecord, ...] = ()
    if config.prompts is not None:
        prompts = dataset.parse_jsonl(_lines(config.prompts, "--prompts"), str(config.prompts))
    if config.trace is not None:
        trace = workloads.parse_trace(_lines(config.trace, "--trace"), str(config.trace))
    spec = config.workload_spec(trace, prompts)
    return workloads.Source(spec, config.seed, config.turns), len(trace)


def _lines(path: Path, option: str) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"{option} {path}: {exc.strerror}") from None


def header_names(
    spec_path: Path | None, model: str, model_header: str | None, session_header: str | None
) -> tuple[str, str]:
    """``(model header, session header)`` for the requests: each flag given wins; else
    the spec's ``envoy.model_header`` and ``model``'s ``routing.session_header`` (the
    default model's when the spec has no ``model``: Envoy refuses that model anyway);
    else ``x-model`` / ``x-session-id``. The spec is read only when a flag is missing.
    Raises ConfigError naming ``--spec`` when it cannot be read or is invalid."""
    if spec_path is None or (model_header and session_header):
        return model_header or names.MODEL_HEADER, session_header or names.SESSION_HEADER
    try:
        spec = load_spec(spec_path)
    except OSError as exc:
        raise ConfigError(f"--spec {spec_path}: {exc.strerror}") from None
    except SpecError as exc:
        raise ConfigError(f"--spec {exc}") from None
    served = next((m for m in spec.models if m.name == model), spec.default)
    return (model_header or spec.envoy.model_header,
            session_header or served.routing.session_header)


def api_key(path: Path | None, environ: Mapping[str, str]) -> str:
    """The API key from ``--api-key-file`` or ``$CARAVAN_API_KEY`` ("" when neither);
    raises ConfigError naming the option (never the key)."""
    if path is None:
        return environ.get("CARAVAN_API_KEY", "").strip()
    try:
        key = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"--api-key-file {path}: {exc.strerror}") from None
    if not key:
        raise ConfigError(f"--api-key-file {path}: the file is empty")
    return key


def _path(p: Path | None) -> str | None:
    return None if p is None else str(p)


def console() -> Console:
    """stdout console; 160 columns when not a terminal (files, pipes, CI logs)."""
    return Console() if sys.stdout.isatty() else Console(width=160)
