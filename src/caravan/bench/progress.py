"""A live rich progress bar implementing ``runner.ProgressSink``.

One task bar per level (``c=10  37/100  err 0``); a summary line when a level ends.
Called on the event loop only; rich's own refresh thread redraws.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from caravan.bench.arrivals import LoadLevel
from caravan.bench.report import fmt_ms, fmt_s
from caravan.bench.results import LevelResult
from caravan.bench.stats import RequestRecord


class RichProgress:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("err {task.fields[errors]}"), TimeElapsedColumn(),
            console=self.console, transient=False,
        )
        self._task: TaskID | None = None
        self._errors = 0

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def level_started(self, level: LoadLevel, total: int) -> None:
        self._errors = 0
        self._task = self._progress.add_task(level.label, total=total, errors=0)

    def request_done(self, record: RequestRecord) -> None:
        if self._task is None:
            return
        if not record.ok:
            self._errors += 1
        self._progress.update(self._task, advance=1, errors=self._errors)

    def level_finished(self, result: LevelResult) -> None:
        s = result.summary
        stop = f" (stopped: {result.stopped})" if result.stopped else ""
        self._progress.console.print(
            f"  {result.level.label}: mean {fmt_s(s.e2e.mean)}, p95 {fmt_s(s.e2e.p95)}, "
            f"TTFT p50 {fmt_ms(s.ttft.median)}, {s.output_token_throughput:.0f} tok/s, "
            f"errors {s.error_count}{stop}"
        )
        for w in result.warnings:
            self._progress.console.print(f"  [yellow]warning[/yellow]: {w}")
