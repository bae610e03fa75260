"""`caravan replica` as a real process on 127.0.0.1, driven by tritonclient."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as tg
from grpc_health.v1 import health_pb2
from replica_proc_helpers import (
    MODEL,
    RunningReplica,
    StreamCollector,
    health_status,
    inputs,
    replica_process,
    scrape,
    text_of,
)
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from caravan.local.process import caravan_argv

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
def rep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningReplica]:
    """One replica 100x faster than real time, streaming a chunk every 5 ms."""
    logs = tmp_path_factory.mktemp("replica")
    with replica_process(
        logs, "--time-scale", "0.01", "--stream-interval-ms", "5", "--replica-id", "rep-a"
    ) as r:
        yield r


def test_unary_infer_returns_prompt_plus_generated_text(rep: RunningReplica) -> None:
    with rep.client() as c:
        result = c.infer(
            MODEL,
            inputs(
                "tell me a story",
                max_tokens=25,
                return_num_input_tokens=True,
                return_num_output_tokens=True,
                return_finish_reason=True,
            ),
            request_id="u1",
        )
    text = text_of(result)
    assert text.startswith("tell me a story ")
    assert len(text.split()) == 4 + 25
    resp = result.get_response()
    assert resp.id == "u1"
    assert resp.parameters["caravan_replica_id"].string_param == "rep-a"
    assert result.as_numpy("num_input_tokens").tolist() == [4]
    assert result.as_numpy("num_output_tokens").tolist() == [25]
    assert result.as_numpy("finish_reason").tolist() == [b"length"]


def test_stream_chunks_concatenate_to_the_unary_text(rep: RunningReplica) -> None:
    prompt = "the same prompt gives the same words"
    with rep.client() as c:
        unary = text_of(c.infer(MODEL, inputs(prompt, max_tokens=300, exclude_input=True)))
        collector = StreamCollector()
        c.start_stream(collector)
        try:
            c.async_stream_infer(
                MODEL, inputs(prompt, stream=True, max_tokens=300), request_id="s1"
            )
            chunks = collector.until_final()
        finally:
            c.stop_stream()
    assert len(chunks) >= 2
    assert "".join(text_of(ch) for ch in chunks) == unary
    finals = [ch.get_response().parameters["triton_final_response"].bool_param for ch in chunks]
    assert finals == [False] * (len(chunks) - 1) + [True]
    assert {ch.get_response().id for ch in chunks} == {"s1"}


def test_stream_false_on_the_stream_rpc_gives_one_whole_response(rep: RunningReplica) -> None:
    with rep.client() as c:
        collector = StreamCollector()
        c.start_stream(collector)
        try:
            c.async_stream_infer(MODEL, inputs("whole please", stream=False, max_tokens=30))
            results = collector.until_final()
        finally:
            c.stop_stream()
    assert len(results) == 1
    assert text_of(results[0]).startswith("whole please ")
    assert len(text_of(results[0]).split()) == 2 + 30


def test_many_requests_multiplexed_on_one_stream(rep: RunningReplica) -> None:
    n = 20
    with rep.client() as c:
        collector = StreamCollector()
        c.start_stream(collector)
        try:
            for i in range(n):
                c.async_stream_infer(
                    MODEL, inputs(f"prompt {i}", stream=True, max_tokens=50), request_id=f"m{i}"
                )
            texts: dict[str, str] = {}
            finals = 0
            while finals < n:
                result, error = collector.next()
                assert error is None, error
                rid = result.get_response().id
                texts[rid] = texts.get(rid, "") + text_of(result)
                finals += result.get_response().parameters["triton_final_response"].bool_param
        finally:
            c.stop_stream()
    assert sorted(texts) == sorted(f"m{i}" for i in range(n))
    assert all(len(t.split()) == 50 for t in texts.values())


def test_health_readiness_and_model_metadata(rep: RunningReplica) -> None:
    assert health_status(rep.url) == SERVING
    assert health_status(rep.url, "inference.GRPCInferenceService") == SERVING
    with rep.client() as c:
        assert c.is_server_live() and c.is_server_ready()
        assert c.is_model_ready(MODEL) and not c.is_model_ready("other")
        cfg = c.get_model_config(MODEL).config
        assert (cfg.backend, cfg.max_batch_size, cfg.model_transaction_policy.decoupled) == (
            "vllm",
            0,
            True,
        )
        md = c.get_model_metadata(MODEL)
        assert md.platform == "vllm" and "text_input" in [i.name for i in md.inputs]
        assert c.get_server_metadata().name == "triton"


def test_initial_metadata_names_the_replica(rep: RunningReplica) -> None:
    with grpc.insecure_channel(rep.url) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        req = pb.ModelInferRequest(model_name=MODEL)
        t = req.inputs.add(name="text_input", datatype="BYTES", shape=[1])
        t.contents.bytes_contents.append(b"typed contents work too")
        resp, call = stub.ModelInfer.with_call(req, timeout=10)
    assert ("x-caravan-replica", "rep-a") in tuple(call.initial_metadata())
    assert resp.parameters["caravan_replica_id"].string_param == "rep-a"


def _bad_json_inputs() -> list[tg.InferInput]:
    import numpy as np

    sp = tg.InferInput("sampling_parameters", [1], "BYTES")
    sp.set_data_from_numpy(np.array([b"{not json"], dtype=np.object_))
    return [*inputs("hi", max_tokens=None), sp]


BAD = [
    (
        "unknown-model",
        "other",
        lambda: inputs("hi"),
        "NOT_FOUND",
        "Request for unknown model: 'other' is not found",
    ),
    (
        "max-tokens-zero",
        MODEL,
        lambda: inputs("hi", max_tokens=0),
        "INVALID_ARGUMENT",
        "sampling_parameters.max_tokens: must be an integer >= 1 (got 0)",
    ),
    ("bad-json", MODEL, _bad_json_inputs, "INVALID_ARGUMENT", "sampling_parameters: invalid JSON"),
    (
        "missing-text",
        MODEL,
        lambda: inputs("hi")[1:],
        "INVALID_ARGUMENT",
        "missing required input(s) ['text_input']",
    ),
    (
        "prompt-too-long",
        MODEL,
        lambda: inputs("w " * 5000, max_tokens=500),
        "INVALID_ARGUMENT",
        "text_input: the prompt (5000 tokens) leaves no room for output within the maximum "
        "model length of 4096 tokens",
    ),
]


@pytest.mark.parametrize(
    ("model", "make_inputs", "status", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_unary_requests_get_triton_statuses(
    rep: RunningReplica,
    model: str,
    make_inputs: Callable[[], list[tg.InferInput]],
    status: str,
    message: str,
) -> None:
    with rep.client() as c, pytest.raises(InferenceServerException) as info:
        c.infer(model, make_inputs())
    assert info.value.status() == f"StatusCode.{status}"
    assert message in info.value.message()


def test_stream_errors_do_not_end_the_stream(rep: RunningReplica) -> None:
    with rep.client() as c:
        collector = StreamCollector()
        c.start_stream(collector)
        try:
            c.async_stream_infer("other", inputs("hi", stream=True))
            _, error = collector.next()
            assert error is not None and "Request for unknown model: 'other'" in error.message()
            c.async_stream_infer(MODEL, inputs("hi", stream=True, max_tokens=0))
            _, error = collector.next()
            assert error is not None and "max_tokens" in error.message()
            c.async_stream_infer(MODEL, inputs("still here", stream=True, max_tokens=10))
            chunks = collector.until_final()
        finally:
            c.stop_stream()
    assert len("".join(text_of(ch) for ch in chunks).split()) == 10


def test_metrics_page_has_every_metric_and_parses_with_promtool(rep: RunningReplica) -> None:
    with rep.client() as c:
        c.infer(MODEL, inputs("count me", max_tokens=5))
    page = scrape(rep)
    for name in (
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_pending_request_count",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
    ):
        assert f"\n# TYPE {name} " in page, name
    assert 'nv_inference_request_success{model="llama",version="1"} ' in page
    assert 'vllm:generation_tokens_total{model_name="llama"} ' in page
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    check = subprocess.run(
        [promtool, "check", "metrics"], input=page, capture_output=True, text=True, timeout=30
    )
    # exit 3 = lint remarks only (Triton's and vLLM's upstream names break promtool's style
    # rules); exit 1 would be a parse error
    assert check.returncode in (0, 3), check.stdout + check.stderr


@pytest.fixture()
def slow_rep(tmp_path: Path) -> Iterator[RunningReplica]:
    """A replica that loads for 1 s and runs at a quarter of real time (300 tokens ~ 1 s)."""
    with replica_process(
        tmp_path, "--time-scale", "0.25", "--load-delay-s", "1", wait_serving=False
    ) as r:
        yield r


def test_loading_then_sigterm_drain_lets_the_in_flight_stream_finish(
    slow_rep: RunningReplica,
) -> None:
    rep = slow_rep
    deadline = time.monotonic() + 15
    while health_status(rep.url) != NOT_SERVING:  # up, still loading
        assert rep.proc.alive() and time.monotonic() < deadline, rep.proc.tail()
        time.sleep(0.02)
    with rep.client() as c:
        assert not c.is_server_ready()
        with pytest.raises(InferenceServerException) as info:
            c.infer(MODEL, inputs("too early"))
        assert info.value.status() == "StatusCode.UNAVAILABLE"
    while health_status(rep.url) != SERVING:
        assert time.monotonic() < deadline, rep.proc.tail()
        time.sleep(0.05)

    with rep.client() as c:
        collector = StreamCollector()
        c.start_stream(collector)
        try:
            c.async_stream_infer(MODEL, inputs("long answer", stream=True, max_tokens=300))
            first, error = collector.next()
            assert error is None
            rep.proc.signal(signal.SIGTERM)
            _wait(lambda: health_status(rep.url) == NOT_SERVING, "health NOT_SERVING after SIGTERM")
            with rep.client() as c2, pytest.raises(InferenceServerException) as info:
                c2.infer(MODEL, inputs("new work"))
            assert info.value.status() == "StatusCode.UNAVAILABLE"
            rest = collector.until_final()
        finally:
            c.stop_stream()
    assert len("".join(text_of(r) for r in [first, *rest]).split()) == 300
    assert rep.proc.proc is not None and rep.proc.proc.wait(15) == 0


def _wait(cond, what: str, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_client_cancelling_a_stream_frees_the_engine(tmp_path: Path) -> None:
    with replica_process(tmp_path, "--time-scale", "0.5", "--max-num-seqs", "1") as rep:
        c = rep.client()
        collector = StreamCollector()
        c.start_stream(collector)
        c.async_stream_infer(MODEL, inputs("a very long one", stream=True, max_tokens=3000))
        collector.next()
        c.stop_stream(cancel_requests=True)
        c.close()
        # with the single slot free again, a short request completes quickly (the
        # cancelled one would have held it for 3000 * 6.5 ms = 19.5 s)
        with rep.client() as c2:
            t0 = time.monotonic()
            c2.infer(MODEL, inputs("short", max_tokens=5))
            assert time.monotonic() - t0 < 5.0
        page = scrape(rep)
        assert 'vllm:num_requests_running{model_name="llama"} 0.0' in page


def test_drain_timeout_bounds_the_wait_and_cancels_what_is_left(tmp_path: Path) -> None:
    # real time: 300 tokens take ~4 s, far longer than the 0.5 s drain timeout
    with replica_process(tmp_path, "--drain-timeout-s", "0.5") as rep:
        c = rep.client()
        collector = StreamCollector()
        c.start_stream(collector)
        try:
            c.async_stream_infer(MODEL, inputs("long", stream=True, max_tokens=300))
            assert collector.next()[1] is None
            t0 = time.monotonic()
            rep.proc.signal(signal.SIGTERM)
            assert rep.proc.proc is not None and rep.proc.proc.wait(10) == 0
            assert time.monotonic() - t0 < 3.0
            results = []
            for _ in range(1000):  # bounded: chunks sent before the cut, then an error
                result, error = collector.next()
                if error is not None:
                    break
                results.append(result)
            assert error is not None
            assert not any(
                r.get_response().parameters["triton_final_response"].bool_param for r in results
            )
        finally:
            c.stop_stream()
            c.close()


def test_fixed_latency_mode_answers_each_request_after_the_set_time(tmp_path: Path) -> None:
    """--fixed-ms-per-token bypasses the batching engine: unary and streamed answers are
    whole, and each takes tokens x the set time whether alone or with others in flight."""
    with replica_process(tmp_path, "--fixed-ms-per-token", "25", "--replica-id", "fx") as r:
        with r.client() as c:
            t0 = time.monotonic()
            result = c.infer(MODEL, inputs("a b", max_tokens=6, exclude_input=True,
                                           return_num_output_tokens=True), request_id="f1")
            took = time.monotonic() - t0
            assert 0.15 <= took < 1.0, took
            assert len(text_of(result).split()) == 6
            assert result.as_numpy("num_output_tokens").tolist() == [6]
            assert result.get_response().parameters["caravan_replica_id"].string_param == "fx"
            done = StreamCollector()
            c.start_stream(callback=done)
            t0 = time.monotonic()
            for i in range(5):  # in flight together: each still takes ~150 ms, not 5x
                c.async_stream_infer(MODEL, inputs(f"p{i}", stream=True, max_tokens=6),
                                     request_id=f"s{i}")
            finals = [done.until_final() for _ in range(5)]
            took = time.monotonic() - t0
            c.stop_stream()
        assert 0.15 <= took < 0.6, took
        assert all(len(f) == 1 for f in finals)  # one whole response per request
        assert sorted(f[0].get_response().id for f in finals) == [f"s{i}" for i in range(5)]


def test_fixed_ms_per_token_must_not_be_negative(tmp_path: Path) -> None:
    proc = subprocess.run(
        caravan_argv("replica", "--model", "m", "--port", "0", "--metrics-port", "0",
                     "--fixed-ms-per-token", "-1"), capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "fixed-ms-per-token" in proc.stderr and ">= 0" in proc.stderr
