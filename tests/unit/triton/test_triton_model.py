"""caravan.triton.model.TritonPythonModel in-process, with a fake pb_utils: what
``execute`` raises, what each request's response sender receives, the health check and
cancellation (docs/triton-contract.md C18, C26-C32)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from triton_fakes import FINAL, FakeConfig, FakeMetricFamily, FakePbUtils, FakeRequest, FakeResponse, flag, text

from caravan.simulator.engine import EngineConfig
from caravan.triton import contract
from caravan.triton.model import TritonPythonModel
from caravan.triton.settings import SETTINGS_FILE, SimulatorSettings


@pytest.fixture
def pb(monkeypatch: pytest.MonkeyPatch) -> FakePbUtils:
    fake = FakePbUtils()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    return fake


Factory = Callable[..., TritonPythonModel]


@pytest.fixture
def make_model(pb: FakePbUtils, tmp_path: Path) -> Iterator[Factory]:
    started: list[TritonPythonModel] = []

    def make(health_check: bool = True, metrics: bool = True, prefix_metrics: bool = False,
             **settings: Any) -> TritonPythonModel:
        version = tmp_path / "m" / "1"
        version.mkdir(parents=True, exist_ok=True)
        options = {"time_scale": 0.01, "stream_interval_ms": 1.0, "fault_file": str(tmp_path / "fault")} | settings
        s = SimulatorSettings(engine=EngineConfig(max_model_len=4096), **options)
        (version / SETTINGS_FILE).write_text(s.to_json())
        params = {"ENABLE_VLLM_HEALTH_CHECK": {"string_value": str(health_check).lower()},
                  "REPORT_CUSTOM_METRICS": {"string_value": "TRUE" if metrics else "no"}}
        if prefix_metrics:
            params["REPORT_PREFIX_CACHE_METRICS"] = {"string_value": "true"}
        model = TritonPythonModel()
        model.initialize({"model_name": "m", "model_version": "1", "model_repository": str(tmp_path / "m"),
                          "model_config": json.dumps({"name": "m", "parameters": params})})
        started.append(model)
        return model

    yield make
    for model in started:
        model.finalize()


def request(prompt: str = "hello caravan", *, sampling: str | None = '{"max_tokens": 5}',
            parameters: dict[str, Any] | None = None, **flags: bool) -> FakeRequest:
    inputs: dict[str, Any] = {"text_input": text(prompt)}
    if sampling is not None:
        inputs["sampling_parameters"] = text(sampling)
    inputs |= {k: flag(v) for k, v in flags.items()}
    return FakeRequest(inputs, parameters)


def error_of(sent: list[tuple[FakeResponse, int]]) -> str:
    """The message of a request answered by exactly one final error response."""
    assert len(sent) == 1, sent
    response, flags = sent[0]
    assert flags == FINAL and response.error is not None
    return response.error.message()


def test_auto_complete_config_adds_the_backends_tensors_and_forces_decoupled(pb: FakePbUtils) -> None:
    declared = {"name": "text_input", "data_type": "TYPE_STRING", "dims": [1], "custom": True}
    config = TritonPythonModel.auto_complete_config(FakeConfig(inputs=[declared]))
    assert [t["name"] for t in config.inputs] == [name for name, *_ in contract.INPUTS]
    assert config.inputs[0] is declared  # declared tensors are kept as written
    assert [t["name"] for t in config.outputs] == [name for name, *_ in contract.OUTPUTS]
    assert all(t["optional"] for t in config.inputs[1:])
    assert (config.policy, config.max_batch_size) == ({"decoupled": True}, 0)


@pytest.mark.parametrize(("sampling", "exc"), [
    ("not json", json.JSONDecodeError),
    ("[1]", TypeError),
    ('"text"', AttributeError),
], ids=["not-json", "array", "string"])
def test_c26a_sampling_text_not_a_json_object_raises_out_of_execute(make_model: Factory, sampling: str,
                                                                   exc: type[Exception]) -> None:
    model = make_model()
    req = request(sampling=sampling)
    with pytest.raises(exc):
        model.execute([req])
    assert req.sender.sent == []  # Triton answers "Failed to process the request(s) ..." itself


def test_c26a_request_parameters_are_checked_too(make_model: Factory) -> None:
    req = request(sampling=None)
    req._parameters = "[]"  # what request.parameters() returned
    with pytest.raises(TypeError):
        make_model().execute([req])


@pytest.mark.parametrize("where", ["tensor", "parameters"])
def test_c30_lora_name_answered_in_execute(make_model: Factory, pb: FakePbUtils, where: str) -> None:
    lora = {"lora_name": "adapter", "max_tokens": 2}
    req = (request(sampling=json.dumps(lora)) if where == "tensor"
           else request(sampling=None, parameters=lora))
    make_model().execute([req])
    sent = req.sender.wait()
    assert error_of(sent) == "LoRA feature is not enabled."
    assert sent[0][0].outputs()["text_output"].tolist() == ["LoRA feature is not enabled."]


def test_c22_non_streaming_one_final_response(make_model: Factory) -> None:
    req = request(return_num_output_tokens=True)
    make_model().execute([req])
    ((response, flags),) = req.sender.wait()
    assert flags == FINAL and response.error is None
    out = response.outputs()
    assert out["text_output"][0].decode().startswith("hello caravan ")
    assert out["num_output_tokens"].tolist() == [5]


def test_c21_streaming_deltas_final_flag_on_the_last_data_response(make_model: Factory) -> None:
    req = request(sampling='{"max_tokens": 200}', stream=True, return_finish_reason=True)
    make_model().execute([req])
    sent = req.sender.wait()
    assert len(sent) > 1
    assert [f for _, f in sent] == [0] * (len(sent) - 1) + [FINAL]
    assert all(r.error is None and r.outputs()["text_output"][0] for r, _ in sent)
    assert [r.outputs()["finish_reason"][0] for r, _ in sent][-2:] == ["None", "length"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"stream": True, "exclude_input_in_output": False},
     "Error generating stream: When streaming, `exclude_input_in_output` = False is not allowed."),
    ({"sampling": '{"no_such_key": 1}'}, "Error generating stream: 'NoneType' object has no attribute 'lora_name'"),
    ({"prompt": " ".join(["w"] * 5000)},
     "Error generating stream: The decoder prompt (length 5000) is longer than the maximum model length of 4096."),
], ids=["exclude-false-streaming", "sampling", "too-long"])
def test_c27_errors_in_stream(make_model: Factory, pb: FakePbUtils, kwargs: dict[str, Any], message: str) -> None:
    req = request(**kwargs)
    make_model().execute([req])
    sent = req.sender.wait()
    assert error_of(sent) == message
    assert sent[0][0].outputs()["text_output"].tolist() == ["N/A"]
    assert "[vllm] Error generating stream: Traceback" in pb.Logger.text()


def test_c26b_logs_why_the_sampling_parameters_failed(make_model: Factory, pb: FakePbUtils) -> None:
    req = request(sampling='{"top_p": 0}')
    make_model().execute([req])
    req.sender.wait()
    assert "[vllm] Was trying to create `TritonSamplingParams`, but got exception: top_p must be in (0, 1]" in (
        pb.Logger.text())


def test_c32_dead_engine_with_health_check_unloads_the_model(make_model: Factory, pb: FakePbUtils,
                                                            tmp_path: Path) -> None:
    model = make_model()
    ok = request()
    model.execute([ok])
    assert ok.sender.wait()[-1][0].error is None
    (tmp_path / "fault").touch()
    later = [request(), request()]
    model.execute(later[:1])
    model.execute(later[1:])
    for req in later:
        sent = req.sender.wait()
        assert error_of(sent) == "Model is unavailable due to unhealthy vLLM engine"
        assert sent[0][0].error is not None and sent[0][0].error.code() == "UNAVAILABLE"
    assert pb.unloaded == ["m", "m"]  # as the backend: every failed check asks again
    assert "[vllm] Engine is not healthy and model will be unloaded" in pb.Logger.text()


def test_c33_dead_engine_without_health_check_fails_in_stream(make_model: Factory, pb: FakePbUtils,
                                                             tmp_path: Path) -> None:
    model = make_model(health_check=False)
    inflight = request(sampling='{"max_tokens": 3000}', stream=True)
    model.execute([inflight])
    deadline = time.monotonic() + 5
    while not inflight.sender.sent and time.monotonic() < deadline:
        time.sleep(0.005)
    (tmp_path / "fault").touch()
    sent = inflight.sender.wait()
    assert sent[-1][0].error is not None
    assert sent[-1][0].error.message() == ("Error generating stream: EngineCore encountered an issue. "
                                           "See stack trace (above) for the root cause.")
    later = request()
    model.execute([later])
    assert error_of(later.sender.wait()) == sent[-1][0].error.message()
    assert pb.unloaded == []


def test_c31_cancelled_stream_ends_with_cancelled(make_model: Factory, pb: FakePbUtils) -> None:
    req = request(sampling='{"max_tokens": 3000}', stream=True)
    req.sender.cancel()  # seen after the first send
    make_model().execute([req])
    sent = req.sender.wait()
    assert sent[0][0].error is None and sent[0][1] == 0
    last, flags = sent[-1]
    assert flags == FINAL and last.error is not None
    assert (last.error.message(), last.error.code()) == ("Request was cancelled", "CANCELLED")
    assert len(sent) < 50
    log = pb.Logger.text()
    assert "[vllm] Cancelling the request" in log and "[vllm] Successfully cancelled the request" in log


def test_c31_cancelled_non_streaming_request_gets_its_text_so_far(make_model: Factory) -> None:
    req = request(sampling='{"max_tokens": 3000}', return_num_output_tokens=True, return_finish_reason=True)
    req.sender.cancel()
    make_model().execute([req])
    ((response, flags),) = req.sender.wait()
    assert flags == FINAL and response.error is None
    out = response.outputs()
    assert 0 < int(out["num_output_tokens"][0]) < 3000 and out["finish_reason"].tolist() == ["None"]


def test_c36_metrics_follow_a_request(make_model: Factory) -> None:
    model = make_model()
    req = request("one two three", sampling='{"max_tokens": 7}')
    model.execute([req])
    req.sender.wait()
    families = {f.name: f.metrics[0] for f in FakeMetricFamily.created}
    deadline = time.monotonic() + 5
    while not families["vllm:request_params_n"].observations and time.monotonic() < deadline:
        time.sleep(0.005)
    assert sum(families["vllm:prompt_tokens_total"].increments) == 3
    assert sum(families["vllm:generation_tokens_total"].increments) == 7
    assert len(families["vllm:time_to_first_token_seconds"].observations) == 1
    assert families["vllm:request_generation_tokens"].observations == [7]
    assert families["vllm:request_params_n"].observations == [1]


def test_prefix_cache_pair_only_when_asked_and_it_counts_hits(make_model: Factory) -> None:
    make_model()
    assert not {f.name for f in FakeMetricFamily.created} & {"vllm:prefix_cache_queries_total"}
    FakeMetricFamily.created.clear()
    model = make_model(prefix_metrics=True)
    doc = " ".join(f"w{i}" for i in range(40))  # 40 tokens: 2 full blocks, 32 cached the second time
    families = {f.name: f.metrics[0] for f in FakeMetricFamily.created}
    for _ in range(2):
        req = request(doc, sampling='{"max_tokens": 3}')
        model.execute([req])
        req.sender.wait()
    deadline = time.monotonic() + 5
    while len(families["vllm:request_params_n"].observations) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert families["vllm:prefix_cache_queries_total"].increments == [40, 40]
    assert families["vllm:prefix_cache_hits_total"].increments == [32]
    assert families["vllm:prefix_cache_hits_total"].labels == {"model": "m", "version": "1"}


def test_c20_metrics_only_with_report_custom_metrics_true(make_model: Factory) -> None:
    make_model(metrics=False)
    assert FakeMetricFamily.created == []


def test_c20_loads_without_metrics_when_the_server_has_them_off(make_model: Factory, pb: FakePbUtils) -> None:
    class NoMetrics:
        COUNTER = HISTOGRAM = "x"

        def __init__(self, **_: Any) -> None:
            raise RuntimeError("metrics not supported")

    pb.MetricFamily = NoMetrics  # type: ignore[assignment]
    model = make_model()
    assert "[vllm] Metrics not supported" in pb.Logger.text()
    req = request()
    model.execute([req])
    assert req.sender.wait()[-1][0].error is None


def test_finalize_waits_for_requests_in_flight(make_model: Factory) -> None:
    model = make_model()
    req = request(sampling='{"max_tokens": 400}', stream=True)
    model.execute([req])
    model.finalize()  # returns only once the request has its final response
    assert req.sender.done.is_set()


def test_hang_fault_holds_requests_unanswered_while_health_passes(make_model: Factory, pb: FakePbUtils,
                                                                  tmp_path: Path) -> None:
    """Test seam: a fault file holding ``hang`` is a gray failure: the health check still
    passes, requests get no response at all until cancelled (CANCELLED) or the file goes."""
    model = make_model()
    (tmp_path / "fault").write_text("hang\n")
    cancelled, released = request(), request()
    model.execute([cancelled])
    model.execute([released])  # the health check ran again and passed: not unloaded
    time.sleep(0.3)
    assert cancelled.sender.sent == [] and released.sender.sent == [] and pb.unloaded == []
    cancelled.sender.cancel()
    assert error_of(cancelled.sender.wait()) == "Request was cancelled"
    (tmp_path / "fault").unlink()
    assert released.sender.wait()[-1][0].error is None
