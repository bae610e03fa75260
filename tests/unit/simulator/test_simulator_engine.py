"""The continuous-batching engine simulator, in simulated milliseconds (no clock)."""

from __future__ import annotations

from dataclasses import asdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caravan.simulator.engine import (
    Advance,
    Engine,
    EngineConfig,
    RequestRejected,
    SeqRequest,
)
from caravan.spec import ENGINE_PROFILES, EngineArgs, SimulatorParams, SpecError, parse_spec

DEFAULT = EngineConfig()


def run_to_end(engine: Engine, now: float = 1e12) -> Advance:
    return engine.advance(now)


def finish_times(adv: Advance) -> dict[str, float]:
    return {f.id: f.t_ms for f in adv.finished}


def admit_times(adv: Advance) -> dict[str, float]:
    return {a.id: a.admitted_ms for a in adv.admitted}


def submit_all(engine: Engine, reqs: list[tuple[str, int, int, float]]) -> None:
    for rid, prompt, out, arrival in reqs:
        engine.submit(SeqRequest(rid, prompt, out, arrival))


@pytest.mark.parametrize(
    ("prompt", "out", "expected_ms"),
    [
        (0, 300, 300 * 13.0),
        (100, 300, 300 * 13.0 + 100 * 0.12),
        (1000, 1, 13.0 + 1000 * 0.12),
        (10, 50, 50 * 13.0 + 10 * 0.12),
    ],
    ids=["300-tokens-no-prompt", "300-tokens-100-prompt", "prefill-only", "short"],
)
def test_batch_one_latency_is_13ms_per_token_plus_prefill(
    prompt: int, out: int, expected_ms: float
) -> None:
    engine = Engine(DEFAULT)
    engine.submit(SeqRequest("a", prompt, out, 0.0))
    adv = run_to_end(engine)
    assert finish_times(adv)["a"] == pytest.approx(expected_ms)
    assert adv.steps == out
    assert adv.generated_tokens == out
    assert adv.prompt_tokens == prompt


@pytest.mark.parametrize(
    ("prompt", "first_token_ms"),
    [(0, 13.0), (500, 13.0 + 60.0), (4000, 13.0 + 480.0)],
    ids=["empty", "500-tokens", "4000-tokens"],
)
def test_prefill_cost_is_paid_in_the_first_step(prompt: int, first_token_ms: float) -> None:
    engine = Engine(EngineConfig(max_model_len=8192, kv_cache_tokens=8192))
    engine.submit(SeqRequest("a", prompt, 5, 0.0))
    adv = run_to_end(engine)
    assert adv.first_tokens[0].t_ms == pytest.approx(first_token_ms)
    # the following four tokens are plain decode steps
    assert finish_times(adv)["a"] == pytest.approx(first_token_ms + 4 * 13.0)


@pytest.mark.parametrize("batch", [1, 2, 10, 100], ids=["b1", "b2", "b10", "b100"])
def test_decode_step_cost_grows_with_batch(batch: int) -> None:
    engine = Engine(DEFAULT)
    submit_all(engine, [(str(i), 0, 100, 0.0) for i in range(batch)])
    adv = run_to_end(engine)
    step = 13.0 + 0.08 * (batch - 1)
    ends = list(finish_times(adv).values())
    assert len(ends) == batch
    assert ends == pytest.approx([100 * step] * batch)
    assert adv.generated_tokens == 100 * batch


def test_latency_is_monotonic_in_batch_size() -> None:
    ends = []
    for batch in (1, 5, 25, 50, 100):
        engine = Engine(DEFAULT)
        submit_all(engine, [(str(i), 20, 300, 0.0) for i in range(batch)])
        ends.append(max(finish_times(run_to_end(engine)).values()))
    assert ends == sorted(ends)
    assert ends[-1] > ends[0] * 1.5


@pytest.mark.parametrize(
    ("max_num_seqs", "n", "expected_rounds"),
    [(1, 3, 3), (2, 3, 2), (2, 4, 2), (4, 4, 1)],
    ids=["serial", "2-slots-3-reqs", "2-slots-4-reqs", "all-fit"],
)
def test_max_num_seqs_caps_the_batch(max_num_seqs: int, n: int, expected_rounds: int) -> None:
    cfg = EngineConfig(max_num_seqs=max_num_seqs, decode_ms_per_seq=0.0)
    engine = Engine(cfg)
    submit_all(engine, [(str(i), 0, 10, 0.0) for i in range(n)])
    peak = 0
    t = 0.0
    while engine.next_event_ms() is not None:
        t = engine.next_event_ms() or t
        engine.advance(t)
        peak = max(peak, engine.stats().running)
    assert peak == min(max_num_seqs, n)
    assert t == pytest.approx(expected_rounds * 10 * 13.0)


def test_kv_budget_makes_requests_wait_until_a_sequence_finishes() -> None:
    # each request reserves 400 + 100 = 500 tokens; 1024 fit only two at once
    cfg = EngineConfig(kv_cache_tokens=1024, max_model_len=1024, prefill_ms_per_token=0.0)
    engine = Engine(cfg)
    submit_all(engine, [("a", 400, 100, 0.0), ("b", 400, 100, 0.0), ("c", 400, 100, 0.0)])
    first = engine.advance(0.0)
    assert [a.id for a in first.admitted] == ["a", "b"]
    assert engine.stats().waiting == 1
    rest = run_to_end(engine)
    step = 13.0 + 0.08
    assert admit_times(rest)["c"] == pytest.approx(100 * step)  # when a and b finish
    assert finish_times(rest)["c"] == pytest.approx(100 * step + 100 * 13.0)


def test_fifo_head_of_line_blocks_smaller_requests_behind_it() -> None:
    cfg = EngineConfig(kv_cache_tokens=1000, max_model_len=1000, prefill_ms_per_token=0.0)
    engine = Engine(cfg)
    submit_all(engine, [("big1", 500, 100, 0.0), ("big2", 500, 100, 1.0), ("small", 10, 10, 2.0)])
    adv = run_to_end(engine)
    order = [a.id for a in adv.admitted]
    assert order == ["big1", "big2", "small"]
    times = admit_times(adv)
    # small would fit next to big1 but waits behind big2 (strict FIFO)
    assert times["small"] >= times["big2"]


def test_requests_join_a_running_batch_at_the_next_step_boundary() -> None:
    engine = Engine(DEFAULT)
    engine.submit(SeqRequest("a", 0, 10, 0.0))
    engine.advance(5.0)  # step 0 runs [0, 13)
    engine.submit(SeqRequest("b", 0, 10, 5.0))
    adv = run_to_end(engine)
    assert admit_times(adv)["b"] == pytest.approx(13.0)


def test_idle_engine_starts_at_arrival_time() -> None:
    engine = Engine(DEFAULT)
    engine.submit(SeqRequest("a", 0, 1, 0.0))
    run_to_end(engine, 100.0)
    assert engine.next_event_ms() is None
    engine.submit(SeqRequest("b", 0, 2, 500.0))
    adv = engine.advance(10_000.0)
    assert admit_times(adv)["b"] == 500.0
    assert finish_times(adv)["b"] == pytest.approx(526.0)


def test_kv_usage_counts_prompt_and_generated_tokens() -> None:
    engine = Engine(EngineConfig(kv_cache_tokens=10_000, prefill_ms_per_token=0.0))
    submit_all(engine, [("a", 100, 50, 0.0), ("b", 300, 50, 0.0)])
    engine.advance(0.0)
    assert engine.stats().kv_used_tokens == 400
    engine.advance(13.08 * 10 + 0.01)  # ten steps done
    st_ = engine.stats()
    assert st_.kv_used_tokens == 400 + 2 * 10
    assert st_.kv_reserved_tokens == 512  # whole 16-token blocks: 10 + 22 (was 500 tokens before blocks)
    assert st_.kv_usage == pytest.approx(420 / 10_000)
    assert engine.progress("a") == 10
    run_to_end(engine)
    assert engine.stats().kv_used_tokens == 0


def test_cancel_frees_the_slot_for_the_next_request() -> None:
    engine = Engine(EngineConfig(max_num_seqs=1))
    submit_all(engine, [("a", 0, 100, 0.0), ("b", 0, 5, 0.0)])
    engine.advance(0.0)
    assert engine.cancel("a") is True
    adv = run_to_end(engine)
    assert "a" not in finish_times(adv)
    assert admit_times(adv)["b"] == pytest.approx(13.0)  # after a's in-flight step
    assert engine.cancel("a") is False


def test_cancel_a_waiting_request() -> None:
    engine = Engine(EngineConfig(max_num_seqs=1))
    submit_all(engine, [("a", 0, 3, 0.0), ("b", 0, 3, 0.0)])
    assert engine.cancel("b") is True
    assert finish_times(run_to_end(engine)).keys() == {"a"}


@pytest.mark.parametrize(
    ("prompt", "out", "message"),
    [
        (4000, 200, "exceeds the maximum model length of 4096"),
        (4096, 1, "the prompt \\(4096 tokens\\) leaves no room for output"),
        (0, 0, "output_tokens >= 1"),
        (-1, 5, "prompt_tokens >= 0"),
    ],
    ids=["too-long", "prompt-fills-model-len", "no-output", "negative-prompt"],
)
def test_impossible_requests_are_rejected(prompt: int, out: int, message: str) -> None:
    with pytest.raises(RequestRejected, match=message):
        Engine(DEFAULT).submit(SeqRequest("a", prompt, out, 0.0))


def test_duplicate_ids_are_refused() -> None:
    engine = Engine(DEFAULT)
    engine.submit(SeqRequest("a", 0, 3, 0.0))
    with pytest.raises(ValueError, match="already in the engine"):
        engine.submit(SeqRequest("a", 0, 3, 0.0))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_num_seqs": 0}, "max_num_seqs"),
        ({"kv_cache_tokens": 100}, "kv_cache_tokens"),
        ({"decode_ms_per_step": 0.0}, "decode_ms_per_step"),
        ({"decode_ms_per_seq": -1.0}, "decode_ms_per_seq"),
        ({"prefill_ms_per_token": float("nan")}, "prefill_ms_per_token"),
    ],
    ids=["seqs", "kv-smaller-than-model-len", "step", "per-seq", "nan-prefill"],
)
def test_config_errors_name_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: must be"):
        EngineConfig(**kwargs)  # type: ignore[arg-type]


def test_config_from_spec_uses_simulator_and_engine_args() -> None:
    sim = SimulatorParams.model_validate({"decode_ms_per_step": 20.0, "kv_cache_tokens": 50_000})
    args = EngineArgs.model_validate({"model": "m", "max_num_seqs": 8, "max_model_len": 2048})
    cfg = EngineConfig.from_spec(sim, args)
    assert (cfg.decode_ms_per_step, cfg.kv_cache_tokens, cfg.max_num_seqs, cfg.max_model_len) == (
        20.0,
        50_000,
        8,
        2048,
    )
    assert EngineConfig.from_spec(sim, args, max_num_seqs=3).max_num_seqs == 3


arrivals = st.lists(
    st.tuples(st.integers(0, 50), st.integers(1, 40), st.floats(0, 400, allow_nan=False)),
    min_size=1,
    max_size=12,
)


def _timeline(
    cfg: EngineConfig, reqs: list[tuple[int, int, float]], tick: float | None
) -> tuple[dict[str, float], dict[str, float]]:
    """Submit each request at its arrival (advancing the engine to it first, as the
    driver does); in between, advance every ``tick`` ms, or not at all when None."""
    engine = Engine(cfg)
    events: list[Advance] = []
    t = 0.0
    for i, (prompt, out, arrival) in enumerate(reqs):
        while tick and t + tick < arrival:
            t += tick
            events.append(engine.advance(t))
        t = max(t, arrival)
        events.append(engine.advance(arrival))
        engine.submit(SeqRequest(str(i), prompt, out, arrival))
    while tick and engine.next_event_ms() is not None:
        t += tick
        events.append(engine.advance(t))
    events.append(engine.advance(1e12))
    admitted = {a.id: a.admitted_ms for e in events for a in e.admitted}
    done = {f.id: f.t_ms for e in events for f in e.finished}
    return admitted, done


@settings(max_examples=40, deadline=None)
@given(arrivals, st.floats(3.0, 40.0))
def test_timeline_does_not_depend_on_how_often_advance_is_called(
    reqs: list[tuple[int, int, float]],
    tick: float,
) -> None:
    """Advancing in small ticks or only at arrivals gives identical events."""
    reqs = sorted(reqs, key=lambda r: r[2])
    cfg = EngineConfig(max_num_seqs=3, kv_cache_tokens=4096, max_model_len=128)
    fine = _timeline(cfg, reqs, tick)
    coarse = _timeline(cfg, reqs, None)
    assert fine[0] == pytest.approx(coarse[0])
    assert fine[1] == pytest.approx(coarse[1])
    assert len(fine[1]) == len(reqs)


def test_engine_profile_fills_unset_costs_and_keeps_explicit_ones() -> None:
    assert SimulatorParams().profile == "h100"
    assert asdict(ENGINE_PROFILES["h100"]) == SimulatorParams().model_dump(
        include={"decode_ms_per_step", "decode_ms_per_seq", "prefill_ms_per_token", "kv_cache_tokens"})
    l4 = EngineConfig.from_spec(SimulatorParams.model_validate({"profile": "l4", "kv_cache_tokens": 60_000}))
    assert (l4.decode_ms_per_step, l4.decode_ms_per_seq, l4.prefill_ms_per_token, l4.kv_cache_tokens) == (
        ENGINE_PROFILES["l4"].decode_ms_per_step, ENGINE_PROFILES["l4"].decode_ms_per_seq,
        ENGINE_PROFILES["l4"].prefill_ms_per_token, 60_000)
    again = SimulatorParams.model_validate(SimulatorParams(profile="l4").model_dump())
    assert again == SimulatorParams(profile="l4")  # the rendered spec round-trips


def test_unknown_engine_profile_is_refused_naming_the_field_and_choices() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({"models": [{"name": "m", "engine": {"model": "m"}, "simulator": {"profile": "a100"}}]})
    text = str(err.value)
    assert "models.0.simulator.profile" in text or "models[0].simulator.profile" in text, text
    assert "'h100'" in text and "'l4'" in text and "a100" in text, text
