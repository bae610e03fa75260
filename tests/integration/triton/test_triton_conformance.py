"""Conformance of a local replica (real tritonserver 2.51 + Caravan's model) with the
replica contract, docs/triton-contract.md: each test names the C-IDs it pins.

One replica serves the whole module (``replica`` fixture): these tests do not disturb it.
Metric assertions work on deltas and poll (the model records metrics on its response
thread, C36). This module: the process and its ports, the inference RPCs, the model configuration;
generation and cancellation are in test_triton_conformance_generation.py, metrics in
test_triton_conformance_metrics.py. Destructive scenarios (dead engine, SIGTERM, SIGKILL, failed
load) are in test_triton_failures.py.
"""

from __future__ import annotations

import ipaddress
import os
import queue
import re
import threading
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from triton_conformance import (
    ERR,
    MODEL,
    Replica,
    decode,
    final_answer,
    infer_request,
    model_infer_error,
    num_output_tokens,
    one,
    only_error,
    stream,
    wait_for,
)
from tritonclient.grpc import service_pb2
from tritonclient.grpc.service_pb2_grpc import GRPCInferenceServiceStub as grpc_stub

pytestmark = pytest.mark.integration


# -- 1. process and ports -------------------------------------------------------

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


# -- 3. the inference RPCs ------------------------------------------------------

def test_c7_model_infer_is_unimplemented(replica: Replica) -> None:
    exc = model_infer_error(replica.endpoint, MODEL)
    assert exc.status() == "StatusCode.UNIMPLEMENTED"
    assert "ModelInfer RPC doesn't support models with decoupled transaction policy" in exc.message()


def test_c8_unknown_model_is_not_found_on_model_infer(replica: Replica) -> None:
    exc = model_infer_error(replica.endpoint, "nope")
    assert exc.status() == "StatusCode.NOT_FOUND"
    assert exc.message() == "Request for unknown model: 'nope' is not found"


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


# -- 4. model configuration -----------------------------------------------------

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
