"""``caravan demo``'s sweep: the bench engine, through Envoy, at rising concurrency.

Defaults reproduce the reference table's shape (1, 5, 10, 25, 50, 100 concurrent
streams, ~300 output tokens each) at the spec's simulator time scale, sized so the
whole demo takes about 3 minutes on 2 cores. Response times are printed in
*simulated* seconds (wall time / time scale), so they read like the reference
table in ../shared/REFERENCE.md; the JSON keeps wall-clock values.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from rich.console import Console
from rich.table import Table

from caravan.bench import arrivals, dataset, meta, report, results, runner
from caravan.bench import session as bench_session
from caravan.bench.triton import Target
from caravan.local.session import LocalSession
from caravan.local.supervisor import LocalStack
from caravan.spec.autoscaling import AutoscalingSpec

OUTPUT_TOKENS = dataset.Lengths(300, 0.2)
INPUT_TOKENS = dataset.Lengths(200, 0.5)


REFERENCE_REQUESTS = {1: 100, 5: 100, 10: 100, 25: 500, 50: 500, 100: 1000}


def default_requests(concurrency: int) -> int:
    """Requests per level: the reference table's totals (100 ... 1000), else 10 per
    concurrent stream within [100, 1000]."""
    return REFERENCE_REQUESTS.get(concurrency, max(100, min(10 * concurrency, 1000)))


def demo_levels(concurrency: str, requests: str | None) -> tuple[arrivals.LoadLevel, ...]:
    """Concurrency levels with their request counts; ValueError names the bad option."""
    values = arrivals.parse_values(concurrency, "--concurrency")
    counts = (arrivals.parse_counts(requests, len(values)) if requests
              else tuple(default_requests(int(v)) for v in values))
    return tuple(
        arrivals.LoadLevel(arrivals.Shape.CONCURRENCY, v,
                           arrivals.Limits(requests=n, warmup=min(int(v), 10), duration_s=120.0))
        for v, n in zip(values, counts, strict=True)
    )


def simulated_rows(result: results.SweepResult, time_scale: float) -> list[list[str]]:
    """Reference-form rows with response times in simulated seconds (wall / time_scale)."""
    rows = []
    for lv in result.levels:
        s = lv.summary
        rows.append([f"{lv.level.value:g}", str(s.requests), f"{s.e2e.mean / 1000 / time_scale:.2f}s",
                     f"{s.e2e.p95 / 1000 / time_scale:.2f}s", report.fmt_errors(lv)])
    return rows


def simulated_table(result: results.SweepResult, time_scale: float) -> Table:
    """The reference benchmark's table, in simulated time, comparable to REFERENCE.md."""
    table = Table(title=f"caravan demo: simulated 8B model on H100-class replicas "
                        f"(time scale {time_scale:g}; times are simulated seconds)")
    for i, h in enumerate(("Concurrency", "Total requests", "Mean response time", "P95 latency", "Errors")):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in simulated_rows(result, time_scale):
        table.add_row(*row)
    return table


def run_demo(session: LocalSession, console: Console, levels: tuple[arrivals.LoadLevel, ...],
             output: Path) -> bool:
    """Sweep through Envoy (``caravan.bench.session.run_session``), print the reference
    table in wall-clock and simulated time, write JSON/CSV/PNG under ``output``.
    True when every request succeeded."""
    stack = session.stack
    model = stack.spec.default.name
    workload = dataset.Workload(seed=7, input=INPUT_TOKENS, output=OUTPUT_TOKENS, turns=1)
    info = meta.run_meta(url=stack.endpoint, model=model, load=", ".join(lv.label for lv in levels),
                         time_scale=str(stack.options.time_scale), source="caravan demo")
    plan = bench_session.SessionPlan(_target(stack, model), model, levels, workload, (), info)
    scale = stack.options.time_scale
    outputs = bench_session.Outputs(
        json=output.with_suffix(".json"), summary_csv=output.with_suffix(".csv"),
        png=output.with_suffix(".png"), plot_title="caravan demo (wall clock)",
        table_title=f"{model} through Envoy (wall clock)",
        extra=lambda result: [simulated_table(result, scale)])
    result = bench_session.run_session(plan, outputs, console, progress_to=console)
    sent, ok = bench_session.succeeded(result)
    return sent == ok


AUTOSCALE_PHASES = (("baseline", 2, 0.15), ("load step", 48, 0.35), ("calm", 2, 0.5))


async def _phase_load(stack: LocalStack, model: str, concurrency: int, seconds: float) -> results.SweepResult:
    level = arrivals.LoadLevel(arrivals.Shape.CONCURRENCY, concurrency,
                               arrivals.Limits(requests=max(50, int(concurrency * seconds * 3)), duration_s=seconds))
    work = dataset.Workload(seed=11, input=INPUT_TOKENS, output=OUTPUT_TOKENS)
    return await runner.run_sweep(_target(stack, model), model, [level], work)


def _target(stack: LocalStack, model: str, stream: bool = True) -> Target:
    """Envoy's endpoint, with the header names the stack's Envoy routes and hashes on
    (the spec's ``envoy.model_header``, the model's ``routing.session_header``)."""
    return Target(stack.endpoint, stream=stream, timeout_s=60.0,
                  model_header=stack.spec.envoy.model_header,
                  session_header=stack.spec.model(model).routing.session_header)


Sample = tuple[float, str, int, int, int]  # (t s, phase, concurrency, ready, starting)


async def _autoscale_timeline(stack: LocalStack, model: str, total_s: float
                              ) -> tuple[list[results.SweepResult], list[Sample]]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    done: list[results.SweepResult] = []
    samples: list[Sample] = []
    for name, concurrency, share in AUTOSCALE_PHASES:
        task = asyncio.create_task(_phase_load(stack, model, concurrency, share * total_s))
        while not task.done():
            samples.append((loop.time() - start, name, concurrency, *stack.counts(model)))
            await asyncio.wait({task}, timeout=max(1.0, total_s / 30))
        done.append(task.result())
    return done, samples


def run_autoscale_demo(session: LocalSession, console: Console, total_s: float | None = None) -> bool:
    """Baseline -> load step -> calm through Envoy while the autoscaler runs; print the
    replica count over time. True when every request succeeded and the model scaled up
    and back down."""
    stack = session.stack
    model = stack.spec.default.name
    policy_s = (stack.spec.default.autoscaling or AutoscalingSpec()).scale_down_stabilization_s
    total = total_s or max(60.0, 2.5 * float(policy_s) * stack.options.time_scale)
    console.print(f"running baseline / load step / calm for about {total:.0f} s ...")
    phases, samples = asyncio.run(_autoscale_timeline(stack, model, total))
    table = Table(title=f"caravan demo --autoscale: {model} replicas over time (wall seconds)")
    for h in ("t (s)", "phase", "concurrency", "ready", "starting"):
        table.add_column(h, justify="right")
    for t, name, conc, ready, starting in samples:
        table.add_row(f"{t:5.0f}", name, str(conc), str(ready), str(starting))
    console.print(table)
    peak = max(ready + starting for _, _, _, ready, starting in samples)
    final = stack.counts(model)[0]
    sent = sum(lv.summary.requests for ph in phases for lv in ph.levels)
    errors = sum(lv.summary.requests - lv.summary.ok for ph in phases for lv in ph.levels)
    start = stack.spec.default.replicas.start
    console.print(f"replicas: start {start}, peak {peak}, end {final}; requests {sent}, failed {errors}")
    return errors == 0 and peak > start and final < peak
