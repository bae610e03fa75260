"""`caravan bench` straight at a real replica (``tritonserver`` with the simulated vLLM
engine, started through ``caravan.local.launch``) on 127.0.0.1.

Small and bounded: time scale 0.01, 8 requests per level, every run under a timeout.
One replica for the module; no test disturbs it.
"""

from __future__ import annotations

import asyncio
import csv
import itertools
import json
import subprocess
from pathlib import Path

import pytest

from caravan.bench.arrivals import Limits, LoadLevel, Shape
from caravan.bench.dataset import Lengths, Workload
from caravan.bench.runner import run_sweep
from caravan.bench.triton import Target
from caravan.local.launch import Launcher
from caravan.local.process import caravan_argv
from caravan.triton.launcher import ReplicaOptions

pytestmark = pytest.mark.integration

MODEL = "bench-m"


@pytest.fixture(scope="module")
def replica(module_launcher: Launcher, fast_replica: ReplicaOptions) -> str:
    """A replica 100x faster than real time, ready; its HOST:PORT."""
    return module_launcher.replica("rep-a", MODEL, fast_replica).endpoint


def bench_cli(*args: str, timeout_s: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(caravan_argv("bench", *args), capture_output=True, text=True,
                          timeout=timeout_s, check=False)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "no-stream"])
def test_cli_sweep_writes_json_csv_png(replica: str, tmp_path: Path, stream: bool) -> None:
    out = tmp_path / "run"
    proc = bench_cli("--url", replica, "--model", MODEL, "--concurrency", "1,4", "--requests", "8",
                     "--warmup", "2", "--output-tokens", "12", "--input-tokens", "20",
                     "--stream" if stream else "--no-stream", "--slo", "e2e_ms=5000",
                     "--no-progress", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Concurrency" in proc.stdout and "Mean response time" in proc.stdout

    data = json.loads((out / "bench.json").read_text())
    assert data["meta"]["model"] == MODEL and data["meta"]["stream"] == str(stream)
    assert [lv["level"]["value"] for lv in data["levels"]] == [1, 4]
    for lv in data["levels"]:
        s = lv["summary"]
        assert (len(lv["records"]), s["requests"], s["ok"], s["errors"]) == (8, 8, 8, {})
        assert s["good"] == 8
        for r in lv["records"]:
            # straight at a replica: no Envoy to name the upstream (x-caravan-upstream)
            assert r["status"] == "OK" and r["replica_id"] == ""
            assert r["tokens_out"] == 12  # num_output_tokens summed over responses
            assert 0 < r["ttft_ms"] <= r["end_ms"] - r["start_ms"]
            # streaming: a gap between consecutive responses (the simulator coalesces
            # tokens per wake-up, so a response may carry several); --no-stream: one
            # final response over ModelStreamInfer (anything else is an error), no gaps
            assert len(r["itl_ms"]) < 12 if stream else r["itl_ms"] == []
        assert (s["itl"]["count"] > 0) == stream

    rows = list(csv.DictReader((out / "records.csv").open()))
    assert len(rows) == 16 and {r["status"] for r in rows} == {"OK"}
    assert len(list(csv.DictReader((out / "summary.csv").open()))) == 2
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_two_runs_and_plot(replica: str, tmp_path: Path) -> None:
    for name, conc in (("a", "1,2"), ("b", "2")):
        proc = bench_cli("--url", replica, "--model", MODEL, "--concurrency", conc, "--requests",
                         "4", "--output-tokens", "4", "--no-progress", "--no-plot",
                         "--out", str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr
    png = tmp_path / "cmp.png"
    proc = subprocess.run(
        caravan_argv("bench", "compare", str(tmp_path / "a" / "bench.json"),
                     str(tmp_path / "b" / "bench.json"), "--labels", "base,new",
                     "--plot", str(png)),
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "new/base" in proc.stdout
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_api_poisson_rate_sessions(replica: str) -> None:
    """run_sweep (the API `caravan demo` uses): Poisson rate with a cap, multi-turn sessions."""
    levels = [LoadLevel(Shape.POISSON, 50.0, Limits(9), max_concurrency=3)]
    workload = Workload(seed=5, input=Lengths(10), output=Lengths(6), turns=3)
    result = asyncio.run(run_sweep(Target(replica), MODEL, levels, workload, meta={"k": "v"}))
    (lv,) = result.levels
    assert result.meta == {"k": "v"}
    assert lv.summary.ok == 9 and lv.stopped == ""
    sessions = {r.session_id for r in lv.records}
    assert len(sessions) == 3
    for sid in sessions:  # turns of one session were sent one after the other
        turns = sorted((r for r in lv.records if r.session_id == sid), key=lambda r: r.turn)
        assert [r.turn for r in turns] == [0, 1, 2]
        assert all(a.end_ms <= b.start_ms for a, b in itertools.pairwise(turns))
        assert turns[0].tokens_in < turns[2].tokens_in  # history grows


def test_wrong_model_counts_errors_and_stops(replica: str, tmp_path: Path) -> None:
    proc = bench_cli("--url", replica, "--model", "no-such-model", "--requests", "20",
                     "--max-errors", "3", "--no-progress", "--no-plot", "--out", str(tmp_path))
    assert proc.returncode == 1  # every request failed
    lv = json.loads((tmp_path / "bench.json").read_text())["levels"][0]
    assert lv["stopped"] == "max_errors"
    assert lv["summary"]["ok"] == 0 and sum(lv["summary"]["errors"].values()) == 3
    assert set(lv["summary"]["errors"]) <= {"NOT_FOUND", "STREAM_ERROR"}


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--concurrency", "1,x"], "--concurrency: 'x' is not a number"),
     (["--slo", "ttft=5"], "--slo 'ttft=5'"),
     (["--concurrency", "1", "--rate", "2"], "not both"),
     (["--url", "nohost"], "url: expected HOST:PORT")],
    ids=["bad-concurrency", "bad-slo", "both-shapes", "bad-url"],
)
def test_bad_options_name_the_field(args: list[str], message: str, tmp_path: Path) -> None:
    proc = bench_cli("--url", "127.0.0.1:1", "--model", MODEL, *args, "--out", str(tmp_path),
                     timeout_s=30)
    assert proc.returncode == 2
    assert message in proc.stderr


@pytest.mark.parametrize(
    "workload",
    [["--workload", "shared-prefix", "--prefixes", "2", "--prefix-tokens", "64",
      "--concurrency", "4", "--requests", "8"],
     ["--workload", "multi-turn", "--conversations", "3", "--concurrency", "3", "--requests", "9"],
     ["--workload", "trace", "--trace-block-tokens", "16", "--trace-speedup", "2"]],
    ids=["shared-prefix", "multi-turn", "trace"],
)
def test_cli_workloads_through_a_replica(replica: str, tmp_path: Path, workload: list[str]) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(
        json.dumps({"timestamp": t, "input_length": 1024, "output_length": 4, "hash_ids": [0, i]}) + "\n"
        for i, t in enumerate((0, 0, 400, 800), start=1)))
    args = list(workload)
    if "trace" in args:
        args += ["--trace", str(trace)]
    proc = bench_cli("--url", replica, "--model", MODEL, *args, "--output-tokens", "4",
                     "--input-tokens", "8", "--no-progress", "--no-plot", "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((tmp_path / "o" / "bench.json").read_text())
    (lv,) = data["levels"]
    records = lv["records"]
    assert lv["summary"]["ok"] == len(records) == (4 if "trace" in args else int(args[-1]))
    assert all(r["session_id"] == "" for r in records)  # no session header, ever
    assert args[1] in data["meta"]["workload"]
    if "trace" in args:  # sent at the trace's times over the speed-up: 0, 0, 0.2 s, 0.4 s
        starts = sorted(r["start_ms"] for r in records)  # (the loop's timers may wake ~1 ms early)
        assert starts[2] >= 195 and starts[3] >= 395
