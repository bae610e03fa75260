"""Conformance of a local replica with the replica contract (docs/triton-contract.md):
generation (prompt echo, sampling parameters and tensors, additional outputs, image and
LoRA inputs) and cancellation. Each test names the C-IDs it pins; the shared ``replica``
fixture (conftest.py) is not disturbed."""

from __future__ import annotations

import base64
import json
import math
import re
import time

import grpc
import pytest
from triton_conformance import (
    ERR,
    FAILURE,
    MODEL,
    SUCCESS,
    Answer,
    OpenStream,
    Replica,
    final_answer,
    infer_request,
    num_output_tokens,
    one,
    only_error,
    scrape,
    wait_for,
)

pytestmark = pytest.mark.integration


# -- 5. generation --------------------------------------------------------------

@pytest.mark.parametrize(("stream_flag", "exclude", "prepended"), [
    (None, None, True),
    (False, None, True),
    (False, False, True),
    (None, True, False),
    (False, True, False),
], ids=["absent", "false", "false-exclude-false", "absent-exclude-true", "false-exclude-true"])
def test_c22_c23_non_streaming_one_response_prompt_prepended_unless_excluded(
        replica: Replica, stream_flag: bool | None, exclude: bool | None, prepended: bool) -> None:
    prompt = "caravans carry salt"
    flags = {"return_num_output_tokens": True} | ({} if exclude is None else {"exclude_input_in_output": exclude})
    answers = one(replica.endpoint, infer_request(prompt, stream=stream_flag, sampling={"max_tokens": 30},
                                                  flags=flags))
    assert len(answers) == 1
    answer = final_answer(answers)
    assert answer.text.startswith(prompt) is prepended
    assert int(answer.outputs["num_output_tokens"][0]) == 30  # the total (C22)


def test_c23_streaming_with_exclude_input_false_is_an_error(replica: Replica) -> None:
    answers = one(replica.endpoint, infer_request(stream=True, flags={"exclude_input_in_output": False}))
    assert only_error(answers) == ERR + "When streaming, `exclude_input_in_output` = False is not allowed."
    assert answers[0].final is True


@pytest.mark.parametrize(("sampling", "tokens"), [
    ({"max_tokens": 2}, 2),
    ({}, 16),  # the tensor wins entirely: no merge with the parameters' max_tokens (C25 default)
], ids=["tensor-max-tokens", "empty-tensor"])
def test_c24_sampling_tensor_wins_over_request_parameters(replica: Replica, sampling: dict[str, object],
                                                         tokens: int) -> None:
    answers = one(replica.endpoint, infer_request(sampling=sampling, params={"max_tokens": 5},
                                                  flags={"return_num_output_tokens": True}))
    assert num_output_tokens(answers) == tokens


def test_c25_max_tokens_defaults_to_16(replica: Replica) -> None:
    answers = one(replica.endpoint, infer_request(stream=True, flags={
        "return_num_output_tokens": True, "return_finish_reason": True}))
    assert num_output_tokens(answers) == 16
    assert final_answer(answers).outputs["finish_reason"].tolist() == [b"length"]


@pytest.mark.parametrize("sampling", ["not json", "[1, 2]", '"text"', "", "null"],
                         ids=["not-json", "array", "string", "empty", "null"])
def test_c17_c26a_c34_sampling_text_not_a_json_object_fails_execute(replica: Replica, sampling: str) -> None:
    before = scrape(replica.plan.metrics_port)
    answers = one(replica.endpoint, infer_request(sampling=sampling))
    error = only_error(answers)
    assert error.startswith(f"Failed to process the request(s) for model '{MODEL}_"), error
    assert re.search(r"message: (JSONDecodeError|TypeError|AttributeError): ", error), error
    assert "\n\nAt:\n" in error
    assert answers[0].final is True
    after = wait_for(lambda: (s := scrape(replica.plan.metrics_port)).value(
        FAILURE, model=MODEL, reason="BACKEND") > before.value(FAILURE, model=MODEL, reason="BACKEND") and s,
        "the failure counter")
    assert after.value(FAILURE, model=MODEL, reason="BACKEND") == before.value(
        FAILURE, model=MODEL, reason="BACKEND") + 1
    assert after.value(SUCCESS, model=MODEL) == before.value(SUCCESS, model=MODEL)


@pytest.mark.parametrize("sampling", [
    {"no_such_key": 1},
    {"max_tokens": "many"},
    {"max_tokens": None},
    {"top_p": 0},
    {"max_tokens": 0},
], ids=["unknown-key", "unconvertible", "null-max-tokens", "top-p-zero", "max-tokens-zero"])
def test_c26b_c27_c34_bad_sampling_values_fail_in_stream_counted_as_success(
        replica: Replica, sampling: dict[str, object]) -> None:
    before = scrape(replica.plan.metrics_port)
    answers = one(replica.endpoint, infer_request(sampling=sampling))
    assert only_error(answers).startswith(ERR)
    assert answers[0].final is True
    wait_for(lambda: scrape(replica.plan.metrics_port).value(SUCCESS, model=MODEL)
             == before.value(SUCCESS, model=MODEL) + 1, "the success counter")
    assert scrape(replica.plan.metrics_port).value(FAILURE, model=MODEL) == before.value(FAILURE, model=MODEL)


ALL_RETURNS = {"return_finish_reason": True, "return_cumulative_logprob": True, "return_logprobs": True,
               "return_num_input_tokens": True, "return_num_output_tokens": True}


def test_c28_additional_outputs_dtypes_and_shapes(replica: Replica) -> None:
    answer = final_answer(one(replica.endpoint, infer_request(sampling={"max_tokens": 5}, flags=ALL_RETURNS)))
    assert answer.datatypes == {"text_output": "BYTES", "finish_reason": "BYTES", "cumulative_logprob": "FP32",
                                "logprobs": "BYTES", "num_input_tokens": "UINT32", "num_output_tokens": "UINT32"}
    assert answer.shapes == {"text_output": [1], "finish_reason": [1], "cumulative_logprob": [1], "logprobs": [1],
                             "num_input_tokens": [], "num_output_tokens": [1]}
    assert answer.outputs["finish_reason"].tolist() == [b"length"]
    assert math.isnan(float(answer.outputs["cumulative_logprob"][0]))  # no `logprobs` sampling parameter
    assert answer.outputs["logprobs"].tolist() == [b"null"]
    assert int(answer.outputs["num_output_tokens"][0]) == 5


@pytest.mark.parametrize("flags", [{}, {name: False for name in ALL_RETURNS}], ids=["absent", "false"])
def test_c28_no_additional_outputs_unless_asked(replica: Replica, flags: dict[str, bool]) -> None:
    answers = one(replica.endpoint, infer_request(stream=True, sampling={"max_tokens": 40}, flags=flags))
    assert {name for a in answers for name in a.outputs} == {"text_output"}


def test_c28_streaming_additional_outputs_per_response(replica: Replica) -> None:
    prompt = "one two three four five"
    answers = one(replica.endpoint, infer_request(prompt, stream=True, sampling={"max_tokens": 120, "logprobs": 1},
                                                  flags=ALL_RETURNS))
    last = final_answer(answers)
    assert len(answers) > 1
    for a in answers[:-1]:
        assert a.outputs["finish_reason"].tolist() == [b"None"]
    assert last.outputs["finish_reason"].tolist() == [b"length"]
    counts = [int(a.outputs["num_output_tokens"][0]) for a in answers]
    assert sum(counts) == 120
    cumulative = [float(a.outputs["cumulative_logprob"][0]) for a in answers]
    assert all(math.isfinite(c) for c in cumulative)
    assert cumulative == sorted(cumulative, reverse=True)  # a cumulative sum of logprobs <= 0
    for a, n in zip(answers, counts, strict=True):
        entries = json.loads(a.outputs["logprobs"][0])
        assert len(entries) == n  # one entry per token added since the previous response
        for entry in entries:
            assert all(set(v) == {"logprob", "rank", "decoded_token"} for v in entry.values())
        assert int(a.outputs["num_input_tokens"]) == int(answers[0].outputs["num_input_tokens"])


PNG_2X2 = ("iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDAAAANHQEDasKb6Q"
           "AAAABJRU5ErkJggg==")


@pytest.mark.parametrize(("image", "ok"), [
    (PNG_2X2.encode(), True),
    (b"not base64!!", False),
    (base64.b64encode(b"plain text, not an image"), False),
], ids=["png", "not-base64", "not-an-image"])
def test_c29_image_input(replica: Replica, image: bytes, ok: bool) -> None:
    answers = one(replica.endpoint, infer_request(sampling={"max_tokens": 2}, extra={"image": [image]}))
    if ok:
        assert final_answer(answers).error == ""
    else:
        assert only_error(answers).startswith(ERR)
        assert answers[0].final is True


def test_c30_embedding_request_refused_on_a_generative_model(replica: Replica) -> None:
    answers = one(replica.endpoint, infer_request(extra={"embedding_request": [b'{"input": "hi"}']}))
    assert only_error(answers) == ERR + f"Model {MODEL} does not support 'embed' request"
    assert answers[0].final is True


@pytest.mark.parametrize("where", ["tensor", "parameters"])
def test_c30_lora_name_without_lora(replica: Replica, where: str) -> None:
    lora = {"lora_name": "adapter-1", "max_tokens": 2}
    request = infer_request(sampling=lora) if where == "tensor" else infer_request(params=lora)
    answers = one(replica.endpoint, request)
    assert only_error(answers) == "LoRA feature is not enabled."
    assert answers[0].final is True


# -- cancellation (C16, C31) ----------------------------------------------------

@pytest.mark.parametrize(("streaming", "how"), [(True, "cancel"), (False, "cancel"), (True, "deadline")],
                         ids=["stream", "no-stream", "deadline"])
def test_c16_c31_cancelling_the_stream_stops_generation(replica: Replica, streaming: bool, how: str) -> None:
    port = replica.plan.metrics_port
    gen = "vllm:generation_tokens_total"
    before = scrape(port).value(gen, model=MODEL)
    log_before = replica.log_text().count("[vllm] Successfully cancelled the request")
    tokens = 3000  # ~2 s at this time scale
    with OpenStream(replica.endpoint, timeout_s=0.5 if how == "deadline" else 30.0) as s:
        s.send(infer_request(f"a long answer please {streaming}", rid="long", stream=streaming,
                             sampling={"max_tokens": tokens}))
        if streaming:
            first = s.get()
            assert isinstance(first, Answer) and not first.error and first.final is False
        else:
            wait_for(lambda: scrape(port).value(gen, model=MODEL) > before, "generation to start")
        if how == "cancel":
            s.cancel()
        end = s.get()
        while isinstance(end, Answer):  # responses sent before the deadline
            assert not end.final
            end = s.get()
        code = grpc.StatusCode.CANCELLED if how == "cancel" else grpc.StatusCode.DEADLINE_EXCEEDED
        assert isinstance(end, grpc.RpcError) and end.code() == code
    wait_for(lambda: replica.log_text().count("[vllm] Successfully cancelled the request") > log_before,
             "the backend's cancellation log line")
    assert "[vllm] Cancelling the request" in replica.log_text()
    stopped = scrape(port).value(gen, model=MODEL)
    time.sleep(0.3)
    assert scrape(port).value(gen, model=MODEL) == stopped, "generation went on after the cancellation"
    assert stopped - before < tokens
