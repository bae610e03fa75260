"""BenchConfig: options validated at once and named as on the command line; the plan
reads the files the options name."""

from __future__ import annotations

from pathlib import Path

import pytest

from caravan.bench.arrivals import Shape
from caravan.bench.config import BenchConfig
from caravan.bench.session import plan_bench
from caravan.bench.workloads import Kind
from caravan.errors import ConfigError


def config(**options: object) -> BenchConfig:
    return BenchConfig.from_options(url="127.0.0.1:9", model="m", **options)


def test_defaults_are_todays_bench() -> None:
    c = config()
    assert [lv.label for lv in c.levels()] == ["c=1"]
    assert c.levels()[0].limits.requests == 100 and c.workload is Kind.UNIQUE
    assert c.describe() == "synthetic in=128±0 out=128±0 turns=1"


def test_reference_sweep() -> None:
    c = config(concurrency="1,5,10,25,50,100", requests="100,100,100,500,500,1000", warmup=2,
               max_concurrency=8)
    levels = c.levels()
    assert [lv.value for lv in levels] == [1, 5, 10, 25, 50, 100]
    assert [lv.limits.requests for lv in levels] == [100, 100, 100, 500, 500, 1000]
    assert all(lv.shape is Shape.CONCURRENCY and lv.limits.warmup == 2 for lv in levels)
    assert all(lv.max_concurrency is None for lv in levels)  # a cap only applies to rates


@pytest.mark.parametrize(("poisson", "shape"), [(True, Shape.POISSON), (False, Shape.CONSTANT)],
                         ids=["poisson", "constant"])
def test_rate_shapes(poisson: bool, shape: Shape) -> None:
    levels = config(rate="1,2", poisson=poisson).levels()
    assert [(lv.shape, lv.value) for lv in levels] == [(shape, 1.0), (shape, 2.0)]


def test_sweeps_and_counts() -> None:
    c = config(rate="1,2", requests="10,20", poisson=False, max_concurrency=4, slo=["ttft_ms=50"])
    assert [(lv.label, lv.limits.requests) for lv in c.levels()] == [
        ("rate=1/cap=4", 10), ("rate=2/cap=4", 20)]
    assert c.slo[0].limit_ms == 50


def test_every_bad_option_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        config(input_spread=1.5, output_tokens=0, workload="nope", sampling="[1]", bogus=1)
    lines = str(err.value).splitlines()
    assert len(lines) == 5
    assert lines[0].startswith("--input-spread: Input should be less than 1 (got 1.5)")
    assert any(line.startswith("--output-tokens:") for line in lines)
    assert any(line.startswith("--workload:") and "'shared-prefix'" in line for line in lines)
    assert "--sampling: expected a JSON object, got '[1]'" in lines
    assert "--bogus: not an option of caravan bench" in lines


@pytest.mark.parametrize(
    ("options", "message"),
    [({"concurrency": "1,x"}, "--concurrency: 'x' is not a number"),
     ({"concurrency": "1.5"}, "--concurrency: values must be whole numbers"),
     ({"concurrency": "1", "rate": "2"}, "not both"),
     ({"concurrency": "1,2,3", "requests": "1,2"}, "--requests: got 2 counts for 3 load levels"),
     ({"workload": "trace"}, "--trace: --workload trace needs --trace FILE"),
     ({"trace": "t.jsonl"}, "--trace: only with --workload trace"),
     ({"workload": "trace", "trace": "t", "rate": "2"}, "drop --concurrency/--rate"),
     ({"workload": "trace", "trace": "t", "warmup": 3}, "--warmup: not with --workload trace"),
     ({"workload": "multi-turn", "turns": 3}, "--prompts/--turns: only with --workload unique"),
     ({"turns_mean": 9.0, "turns_max": 4}, "--turns-mean: 9 is above --turns-max 4"),
     ({"prefixes": 0}, "--prefixes: Input should be greater than or equal to 1")],
    ids=["bad-number", "fractional", "both-shapes", "counts", "trace-no-file", "file-no-trace", "trace-rate",
         "trace-warmup", "turns-multi", "turns-mean", "prefixes"],
)
def test_bad_combinations_name_the_option(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(**options)


def test_plan_reads_the_trace_and_replays_it_whole(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"timestamp": 0, "input_length": 600, "output_length": 3, "hash_ids": [0, 1]}\n'
                     '{"timestamp": 250, "input_length": 600, "output_length": 3, "hash_ids": [0, 2]}\n')
    plan = plan_bench(config(workload="trace", trace=str(trace), trace_speedup=2.0,
                             trace_block_tokens=32))
    (level,) = plan.levels
    assert (level.shape, level.value, level.limits.requests) == (Shape.TRACE, 2.0, 2)
    specs = plan.source.build(level.limits.requests)
    assert [s.send_at_s for s in specs] == [0.0, 0.25]
    assert plan.meta["workload"] == f"trace={trace} speedup=2 block=32"


@pytest.mark.parametrize(
    ("options", "message"),
    [({"workload": "trace", "trace": "missing.jsonl"}, "--trace missing.jsonl: No such file"),
     ({"prompts": "missing.jsonl"}, "--prompts missing.jsonl: No such file"),
     ({"api_key_file": "missing.key"}, "--api-key-file missing.key: No such file"),
     ({"url": "nohost"}, "url: expected HOST:PORT")],
    ids=["trace", "prompts", "api-key", "url"],
)
def test_plan_errors_name_the_option(options: dict[str, object], message: str,
                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    opts = {"url": "127.0.0.1:9", "model": "m", **options}
    with pytest.raises(ConfigError, match=message):
        plan_bench(BenchConfig.from_options(**opts))
