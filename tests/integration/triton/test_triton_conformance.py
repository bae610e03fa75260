"""Conformance of a local replica (real tritonserver 2.51 + Caravan's model) with the
replica contract, docs/triton-contract.md: each test names the C-IDs it pins.

One replica serves the whole module (``replica`` fixture): these tests do not disturb it.
Metric assertions work on deltas and poll (the model records metrics on its response
thread, C36). Destructive scenarios (dead engine, SIGTERM, SIGKILL, failed load) are in
test_triton_failures.py.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import math
import os
import queue
import re
import threading
import time
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from triton_conformance import (
    MAX_MODEL_LEN,
    MODEL,
    Answer,
    OpenStream,
    Replica,
    Scrape,
    decode,
    infer_request,
    model_infer_error,
    one,
    scrape,
    stream,
    wait_for,
)
from tritonclient.grpc import service_pb2
from tritonclient.grpc.service_pb2_grpc import GRPCInferenceServiceStub as grpc_stub

pytestmark = pytest.mark.integration

SUCCESS = "nv_inference_request_success"
FAILURE = "nv_inference_request_failure"
ERR = "Error generating stream: "


def final_answer(answers: list[Answer]) -> Answer:
    assert answers, "no answer"
    assert [a.final for a in answers[:-1]] == [False] * (len(answers) - 1), answers
    assert answers[-1].final is True, answers[-1]
    return answers[-1]


def only_error(answers: list[Answer]) -> str:
    """The error of a request answered by exactly one error response."""
    assert len(answers) == 1, answers
    assert answers[0].error, answers[0]
    return answers[0].error


def num_output_tokens(answers: list[Answer]) -> int:
    return sum(int(a.outputs["num_output_tokens"].sum()) for a in answers)


# -- 1. process and ports ----------------------------------------------------------

def _address(hex_addr: str) -> str:
    """/proc/net/tcp{,6} address: 32-bit words in host (little-endian) order; an
    IPv4-mapped IPv6 address is given as its IPv4 address."""
    raw = b"".join(bytes.fromhex(hex_addr[i:i + 8])[::-1] for i in range(0, len(hex_addr), 8))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` listens on (/proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd) if fd.is_symlink() else ""
        if m := re.fullmatch(r"socket:\[(\d+)\]", target):
            inodes.add(m.group(1))
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state == "0A" and inode in inodes:  # LISTEN
                addr, port = local.split(":")
                out.add((_address(addr), int(port, 16)))
    return out


def test_c1_listens_only_on_loopback_grpc_and_metrics(replica: Replica) -> None:
    expected = {("127.0.0.1", replica.plan.grpc_port), ("127.0.0.1", replica.plan.metrics_port)}
    # tritonserver opens its endpoints one after another (server src/main.cc
    # StartEndpoints: gRPC, HTTP, then metrics), so the
    # gRPC readiness the fixture waited for can come a moment before the metrics port.
    wait_for(lambda: _listening(replica.proc.pid) >= expected, "both endpoints listening")
    assert _listening(replica.proc.pid) == expected


def test_c4_health_check_is_server_readiness_for_any_service(replica: Replica) -> None:
    with grpc.insecure_channel(replica.endpoint) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService", "no.such.Service"):
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING, service


# -- 3. the inference RPCs ---------------------------------------------------------

def test_c7_model_infer_is_unimplemented(replica: Replica) -> None:
    exc = model_infer_error(replica.endpoint, MODEL)
    assert exc.status() == "StatusCode.UNIMPLEMENTED"
    assert "ModelInfer RPC doesn't support models with decoupled transaction policy" in exc.message()


def test_c8_unknown_model_is_not_found_on_model_infer(replica: Replica) -> None:
    exc = model_infer_error(replica.endpoint, "nope")
    assert exc.status() == "StatusCode.NOT_FOUND"
    assert exc.message() == "Request for unknown model: 'nope' is not found"


# Refused requests go one per stream here: on 2.51 a stream carrying two requests that
# core refuses (e.g. one without inputs, then one for an unknown model) can hang after
# the half-close or abort tritonserver (gRPC "ASSERTION FAILED: !byte_buffer->Valid()").


@pytest.mark.parametrize(("request_", "message"), [
    (infer_request(model="nope", rid="a"), "Request for unknown model: 'nope' is not found"),
    (infer_request(rid="a", version="7"), f"Request for unknown model: '{MODEL}' version 7 is not found"),
], ids=["unknown-model", "unknown-version"])
def test_c8_c11_unknown_model_errors_in_stream_without_final_flag(
        replica: Replica, request_: service_pb2.ModelInferRequest, message: str) -> None:
    answers = one(replica.endpoint, request_)  # the stream then ends OK
    assert only_error(answers) == message
    error = answers[0]
    assert (error.id, error.model_name, error.outputs) == ("a", "", {})
    assert error.final is None and "triton_final_response" not in error.parameters  # C11: refused before the model


def test_c8_c10_c13_the_stream_carries_on_after_an_in_stream_error(replica: Replica) -> None:
    answers = stream(replica.endpoint, [infer_request(model="nope", rid="a"),
                                        infer_request(rid="b", sampling={"max_tokens": 2})])
    assert [a.error for a in answers if a.id == "a"] == ["Request for unknown model: 'nope' is not found"]
    good = final_answer([a for a in answers if a.id == "b"])
    assert not good.error and good.outputs["text_output"].shape == (1,)


def test_c10_c27_model_error_in_stream_no_outputs_final_flag(replica: Replica) -> None:
    answers = stream(replica.endpoint, [
        infer_request(rid="bad", stream=True, flags={"exclude_input_in_output": False}),
        infer_request(rid="good", stream=True, sampling={"max_tokens": 2}),
    ])
    bad = [a for a in answers if a.id == "bad"]
    assert len(bad) == 1
    assert bad[0].error.startswith(ERR)
    assert bad[0].outputs == {}  # the backend's "N/A" text_output is dropped
    assert bad[0].final is True
    assert final_answer([a for a in answers if a.id == "good"]).error == ""


def test_c11_c12_c21_streaming_sends_deltas_and_flags_the_last_data_response(replica: Replica) -> None:
    prompt = "the caravan crosses the desert at night"
    answers = one(replica.endpoint, infer_request(prompt, rid="s1", stream=True, sampling={"max_tokens": 200},
                                                  flags={"return_num_output_tokens": True}))
    last = final_answer(answers)
    assert len(answers) > 1
    for a in answers:
        assert (a.error, a.id, a.model_name, a.model_version) == ("", "s1", MODEL, "1")
        assert a.parameters == {"triton_final_response"}
        assert a.outputs["text_output"].shape == (1,) and a.datatypes["text_output"] == "BYTES"
    assert last.outputs["text_output"].size == 1  # the final flag rides on a data response
    assert num_output_tokens(answers) == 200
    streamed = "".join(a.text for a in answers)
    whole = final_answer(one(replica.endpoint, infer_request(prompt, rid="s2", sampling={"max_tokens": 200},
                                                             flags={"exclude_input_in_output": True})))
    assert streamed == whole.text
    assert not streamed.startswith(prompt)


def test_c39_no_response_headers_before_the_first_response(replica: Replica) -> None:
    with grpc.insecure_channel(replica.endpoint) as channel:
        requests: queue.Queue[service_pb2.ModelInferRequest | None] = queue.Queue()
        call = grpc_stub(channel).ModelStreamInfer(iter(requests.get, None), timeout=10)
        headers = threading.Event()
        threading.Thread(target=lambda: (call.initial_metadata(), headers.set()), daemon=True).start()
        assert not headers.wait(0.5), "initial metadata before any response"
        requests.put(infer_request(sampling={"max_tokens": 2}))
        first = decode(next(call))
        assert headers.wait(5) and not first.error
        requests.put(None)
        assert [decode(r) for r in call] or first.final


def test_c13_requests_on_one_stream_interleave_and_end_ok(replica: Replica) -> None:
    reqs = [infer_request(f"prompt number {i}", rid=f"i{i}", stream=True, sampling={"max_tokens": 300})
            for i in range(3)]
    answers = stream(replica.endpoint, reqs)
    for i in range(3):
        final_answer([a for a in answers if a.id == f"i{i}"])
    first_final = next(i for i, a in enumerate(answers) if a.final)
    assert len({a.id for a in answers[:first_final + 1]}) > 1, f"no interleaving: {[a.id for a in answers]}"


@pytest.mark.parametrize(("params", "tokens"), [
    ({"max_tokens": 3}, 3),
    ({"max_tokens": "4"}, 4),  # C24: converted with the annotation's type
    ({"max_tokens": 2, "temperature": 0.5, "ignore_eos": True}, 2),  # double and bool parameters
], ids=["int64", "string-coerced", "double-and-bool"])
def test_c14_c24_request_parameters_are_the_sampling_parameters(replica: Replica, params: dict[str, object],
                                                               tokens: int) -> None:
    answers = one(replica.endpoint, infer_request(params=params, flags={"return_num_output_tokens": True}))
    assert num_output_tokens(answers) == tokens and final_answer(answers).error == ""


@pytest.mark.parametrize(("params", "message"), [
    ({"max_tokens": ("uint64", 3)},
     "invalid value type for 'max_tokens' parameter, expected int64_param, bool_param, or string_param."),
    ({"triton_x": 1},
     "parameter keys starting with 'triton_' are reserved for Triton usage. Only the following keys starting "
     "with 'triton_' are allowed: triton_enable_empty_final_response"),
], ids=["uint64", "triton-prefix"])
def test_c14_refused_parameters(replica: Replica, params: dict[str, object], message: str) -> None:
    answers = one(replica.endpoint, infer_request(params=params))
    assert message in only_error(answers)
    assert answers[0].final is None


def _typed_text_input(rid: str, datatype: str, shape: list[int], content: bytes) -> service_pb2.ModelInferRequest:
    req = infer_request(None, rid=rid)
    req.inputs.append(service_pb2.ModelInferRequest.InferInputTensor(name="text_input", datatype=datatype,
                                                                     shape=shape))
    req.raw_input_contents.append(content)
    return req


@pytest.mark.parametrize(("request_", "parts"), [
    (infer_request(None, rid="x"), ["[request id: x] ", "missing required input(s) ['text_input']"]),
    (_typed_text_input("x", "INT32", [1], (7).to_bytes(4, "little")), ["[request id: x] ", "'text_input'", "INT32"]),
    (_typed_text_input("x", "BYTES", [2], b"\x01\x00\x00\x00a\x01\x00\x00\x00b"),
     ["[request id: x] ", "'text_input'", "[2]"]),
    # An undeclared input is refused too, but without the "[request id: ...]" prefix.
    (infer_request(rid="x", extra={"no_such_input": [b"x"]}),
     [f"unexpected inference input 'no_such_input' for model '{MODEL}'"]),
], ids=["no-inputs", "wrong-type", "wrong-shape", "undeclared"])
def test_c15_inputs_checked_against_the_config(replica: Replica, request_: service_pb2.ModelInferRequest,
                                               parts: list[str]) -> None:
    answers = one(replica.endpoint, request_)
    error = only_error(answers)
    assert error.startswith(parts[0]), error
    assert all(p in error for p in parts), error
    assert answers[0].final is None


def test_c15_missing_text_input_with_other_inputs_reaches_the_model(replica: Replica) -> None:
    """Core checks only the number of inputs (between the required count and all of
    them): an optional input without ``text_input`` reaches the backend, which fails on
    ``get_input_tensor_by_name(request, "text_input").as_numpy()``."""
    answers = one(replica.endpoint, infer_request(None, flags={"stream": False}))
    assert only_error(answers) == ERR + "'NoneType' object has no attribute 'as_numpy'"
    assert answers[0].final is True


# -- 4. model configuration --------------------------------------------------------

def test_c18_c19_c20_model_config_and_metadata(replica: Replica) -> None:
    client = grpcclient.InferenceServerClient(replica.endpoint)
    try:
        config = client.get_model_config(MODEL, as_json=True)["config"]
        metadata = client.get_model_metadata(MODEL, as_json=True)
    finally:
        client.close()
    assert (config["backend"], config["runtime"], metadata["platform"]) == ("vllm", "model.py", "vllm")
    assert config["model_transaction_policy"] == {"decoupled": True}
    assert config.get("max_batch_size", 0) == 0
    inputs = {t["name"]: (t["data_type"], t["dims"], t.get("optional", False)) for t in config["input"]}
    assert inputs == {
        "text_input": ("TYPE_STRING", ["1"], False),
        "image": ("TYPE_STRING", ["-1"], True),
        "stream": ("TYPE_BOOL", ["1"], True),
        "sampling_parameters": ("TYPE_STRING", ["1"], True),
        "exclude_input_in_output": ("TYPE_BOOL", ["1"], True),
        "return_finish_reason": ("TYPE_BOOL", ["1"], True),
        "return_cumulative_logprob": ("TYPE_BOOL", ["1"], True),
        "return_logprobs": ("TYPE_BOOL", ["1"], True),
        "return_num_input_tokens": ("TYPE_BOOL", ["1"], True),
        "return_num_output_tokens": ("TYPE_BOOL", ["1"], True),
        "embedding_request": ("TYPE_STRING", ["1"], True),
    }
    outputs = {t["name"]: (t["data_type"], t["dims"]) for t in config["output"]}
    assert outputs == {
        "text_output": ("TYPE_STRING", ["-1"]),
        "finish_reason": ("TYPE_STRING", ["-1"]),
        "cumulative_logprob": ("TYPE_FP32", ["-1"]),
        "logprobs": ("TYPE_STRING", ["-1"]),
        "num_input_tokens": ("TYPE_UINT32", ["1"]),
        "num_output_tokens": ("TYPE_UINT32", ["-1"]),
    }
    params = {k: v["string_value"] for k, v in config["parameters"].items()}
    assert params["ENABLE_VLLM_HEALTH_CHECK"] == "true" and params["REPORT_CUSTOM_METRICS"] == "true"


# -- 5. generation -----------------------------------------------------------------

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


# -- 7. metrics --------------------------------------------------------------------

FAMILIES = {
    "vllm:prompt_tokens_total": ("counter", "Number of prefill tokens processed."),
    "vllm:generation_tokens_total": ("counter", "Number of generation tokens processed."),
    "vllm:time_to_first_token_seconds": ("histogram", "Histogram of time to first token in seconds."),
    "vllm:time_per_output_token_seconds": ("histogram", "Histogram of time per output token in seconds."),
    "vllm:e2e_request_latency_seconds": ("histogram", "Histogram of end to end request latency in seconds."),
    "vllm:request_prompt_tokens": ("histogram", "Number of prefill tokens processed."),
    "vllm:request_generation_tokens": ("histogram", "Number of generation tokens processed."),
    "vllm:request_params_n": ("histogram", "Histogram of the n request parameter."),
}
TOKEN_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]  # build_1_2_5_buckets(4096)
BUCKETS = {
    "vllm:time_to_first_token_seconds": [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                                         2.5, 5.0, 7.5, 10.0],
    "vllm:time_per_output_token_seconds": [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
                                           2.5],
    "vllm:e2e_request_latency_seconds": [1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0],
    "vllm:request_prompt_tokens": TOKEN_BUCKETS,
    "vllm:request_generation_tokens": TOKEN_BUCKETS,
    "vllm:request_params_n": [1, 2, 5, 10, 20],
}


# Caravan addition (C37): vLLM's own prefix-cache pair, on by default in the rendered
# config (REPORT_PREFIX_CACHE_METRICS); HELP as vllm/v1/metrics/loggers.py.
PREFIX_CACHE_FAMILIES = {
    "vllm:prefix_cache_queries_total": ("counter", "Prefix cache queries, in terms of number of queried tokens."),
    "vllm:prefix_cache_hits_total": ("counter", "Prefix cache hits, in terms of number of cached tokens."),
}


def test_c35_c37_exactly_the_eight_vllm_families_and_the_prefix_cache_pair(replica: Replica) -> None:
    assert MAX_MODEL_LEN == 4096
    s = scrape(replica.plan.metrics_port)
    vllm = {name for name in s.types if name.startswith("vllm:")}
    every = {**FAMILIES, **PREFIX_CACHE_FAMILIES}
    assert vllm == set(every), "C37: nothing else of vLLM is exported (bar Caravan's prefix-cache pair)"
    for n, _, _ in s.samples:
        if n.startswith("vllm:"):
            assert n in every or re.sub(r"_(bucket|count|sum)$", "", n) in every, n
    for name, (kind, doc) in every.items():
        assert (s.types[name], s.help[name]) == (kind, doc), name
        if kind == "counter":
            assert s.series(name) == [{"model": MODEL, "version": "1"}], name
            continue
        for suffix in ("_count", "_sum"):
            assert s.series(name + suffix) == [{"model": MODEL, "version": "1"}], name
        buckets = s.series(name + "_bucket")
        assert all(set(b) == {"model", "version", "le"} and b["model"] == MODEL and b["version"] == "1"
                   for b in buckets), buckets
        edges = [float(b["le"]) for b in buckets]
        assert edges == [*map(float, BUCKETS[name]), math.inf], name


def _metric_deltas(before: Scrape, after: Scrape) -> dict[str, float]:
    names = ("vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:e2e_request_latency_seconds_count",
             "vllm:time_to_first_token_seconds_count", "vllm:request_prompt_tokens_sum",
             "vllm:request_generation_tokens_sum", "vllm:request_params_n_sum", "vllm:request_params_n_count")
    return {n: after.value(n, model=MODEL) - before.value(n, model=MODEL) for n in names}


def test_c36_metrics_move_with_a_request(replica: Replica) -> None:
    before = scrape(replica.plan.metrics_port)
    prompt = "count these five words"
    answers = one(replica.endpoint, infer_request(prompt, sampling={"max_tokens": 7},
                                                  flags={"return_num_input_tokens": True}))
    prompt_tokens = int(final_answer(answers).outputs["num_input_tokens"])
    want = {"vllm:prompt_tokens_total": prompt_tokens, "vllm:generation_tokens_total": 7,
            "vllm:e2e_request_latency_seconds_count": 1, "vllm:time_to_first_token_seconds_count": 1,
            "vllm:request_prompt_tokens_sum": prompt_tokens, "vllm:request_generation_tokens_sum": 7,
            "vllm:request_params_n_sum": 1, "vllm:request_params_n_count": 1}
    wait_for(lambda: _metric_deltas(before, scrape(replica.plan.metrics_port)) == want, "the vllm: metrics",
             timeout_s=5)


def test_c34_refused_requests_are_counted_nowhere(replica: Replica) -> None:
    before = scrape(replica.plan.metrics_port)
    assert only_error(one(replica.endpoint, infer_request(model="nope")))
    assert only_error(one(replica.endpoint, infer_request(None, rid="no-inputs")))
    good = final_answer(one(replica.endpoint, infer_request(sampling={"max_tokens": 1})))
    assert good.error == ""
    wait_for(lambda: scrape(replica.plan.metrics_port).value(SUCCESS, model=MODEL)
             == before.value(SUCCESS, model=MODEL) + 1, "the success counter")
    after = scrape(replica.plan.metrics_port)
    assert after.value(FAILURE, model=MODEL) == before.value(FAILURE, model=MODEL)
    assert not [lab for n, lab, _ in after.samples if n.startswith("nv_inference") and lab.get("model") == "nope"]


# -- cancellation (C16, C31) -------------------------------------------------------

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
