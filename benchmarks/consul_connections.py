"""Connections the control plane holds to its Consul agent, and the requests it sends,
at 1, 20 and 100 models (issue 14).

    .venv/bin/python benchmarks/consul_connections.py [--window-s 10] [--models 1,20,100]

For each model count: a fresh Consul fake (``tests/fakes/consul/``, loaded by ``fakes.load_fake``;
Consul's index and wake rules from its source) with two replicas per model, on 127.0.0.1,
and Caravan's ``ConsulReplicaSource`` over real HTTP with the spec's default ``wait_s``
(30 s). Once every model is discovered, three windows of ``window_s`` each:

- quiet: nothing changes;
- check churn elsewhere: another service's check changes 10 times a second (a busy
  datacenter's health checks);
- instance churn elsewhere: another service's instance is re-registered twice a second
  (deployments of other jobs).

Figures: connections open at the agent (``open_connections()``, sampled every 0.1 s: the
max), and Consul requests per second by path (watches vs model reads). Before this change,
each model had its own blocking query: n connections for n models, n / ``wait_s``
requests a second when quiet, none for changes elsewhere. Prints a table and writes
benchmarks/results/consul_connections.json; about 2 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.table import Table

from caravan.discovery.consul import ConsulReplicaSource
from caravan.discovery.consul_settings import ConsulSettings
from fakes import load_fake

if TYPE_CHECKING:
    from tests.fakes.consul import ConsulFake

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "consul_connections.json"
WAIT_S = 30.0
READ_PATH = "/v1/health/service/"


def consul_fake() -> ConsulFake:
    """A new Consul fake (``tests/fakes/consul/``)."""
    fake: ConsulFake = load_fake("consul").ConsulFake()
    return fake


class Churn:
    """Calls ``action(i)`` ``per_s`` times a second in a thread until ``stop()``."""

    def __init__(self, action: Callable[[int], object], per_s: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(action, per_s), daemon=True)

    def _run(self, action: Callable[[int], object], per_s: float) -> None:
        i = 0
        while not self._stop.wait(1.0 / per_s):
            action(i)
            i += 1

    def __enter__(self) -> Churn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


async def window(fake: ConsulFake, seconds: float) -> dict[str, Any]:
    """Max open connections and requests per second by kind over ``seconds``."""
    t0, peak = time.monotonic(), 0
    while time.monotonic() - t0 < seconds:
        peak = max(peak, fake.open_connections())
        await asyncio.sleep(0.1)
    kinds = Counter("model reads" if r.path.startswith(READ_PATH) else "watches"
                    for r in fake.requests if r.at >= t0)
    return {"max_connections": peak,
            "watch_requests_per_s": round(kinds["watches"] / seconds, 2),
            "model_reads_per_s": round(kinds["model reads"] / seconds, 2)}


async def measure(n: int, window_s: float) -> dict[str, Any]:
    fake = consul_fake()
    fake.start()
    models = [f"m{i:03d}" for i in range(n)]
    for m in models:
        for r in range(2):
            fake.register(f"triton-{m}", f"{m}-{r}", address=f"10.0.{r}.1")
    fake.register("billing", "billing-0", address="10.9.0.1")
    settings = ConsulSettings(host="127.0.0.1", port=fake.port, wait_s=WAIT_S)
    source = ConsulReplicaSource(settings, CollectorRegistry(), rng=random.Random(0))
    seen: set[str] = set()

    async def pump() -> None:
        async for rs in source.updates(models):
            seen.add(rs.model)

    task = asyncio.create_task(pump())
    try:
        t0 = time.monotonic()
        while len(seen) < n:
            await asyncio.sleep(0.01)
        discovered = time.monotonic() - t0
        await asyncio.sleep(1.0)
        row: dict[str, Any] = {"models": n, "all_discovered_s": round(discovered, 3),
                               "quiet": await window(fake, window_s)}
        statuses = ("critical", "passing")
        with Churn(lambda i: fake.set_check("billing-0", statuses[i % 2]), 10.0):
            row["check_churn_elsewhere_10_per_s"] = await window(fake, window_s)
        with Churn(lambda i: fake.register("billing", "billing-0", address="10.9.0.1",
                                           port=9000 + i % 2), 2.0):
            row["instance_churn_elsewhere_2_per_s"] = await window(fake, window_s)
        return row
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        fake.stop()


SCENARIOS = (("quiet", "quiet"), ("check_churn_elsewhere_10_per_s", "10 checks/s elsewhere"),
             ("instance_churn_elsewhere_2_per_s", "2 instances/s elsewhere"))


def print_report(rows: list[dict[str, Any]], console: Console) -> None:
    table = Table(title=f"Consul connections and requests (wait_s {WAIT_S:g} s)")
    for col in ("models", "scenario", "max connections", "watch req/s", "model reads/s"):
        table.add_column(col)
    for row in rows:
        for key, label in SCENARIOS:
            w = row[key]
            table.add_row(str(row["models"]), label, str(w["max_connections"]),
                          f"{w['watch_requests_per_s']:g}", f"{w['model_reads_per_s']:g}")
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--window-s", type=float, default=10.0, help="length of each window")
    p.add_argument("--models", default="1,20,100", help="model counts, comma-separated")
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    counts = [int(x) for x in a.models.split(",") if x.strip()]
    if a.window_s <= 0 or not counts or min(counts) < 1:
        p.error("--window-s > 0 and model counts >= 1 required")
    console = Console(width=120)
    started = time.time()
    rows = []
    for n in counts:
        console.print(f"{n} model(s) ...")
        rows.append(asyncio.run(measure(n, a.window_s)))
    res = {"rows": rows, "meta": {
        "command": " ".join(["benchmarks/consul_connections.py", *(argv or sys.argv[1:])]),
        "python": platform.python_version(), "machine": platform.machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1), "consul_wait_s": WAIT_S,
        "window_s": a.window_s}}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1) + "\n")
    print_report(rows, console)
    console.print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
