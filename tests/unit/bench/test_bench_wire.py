"""wire: pre-serialized requests match what tritonclient itself would send."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2
from tritonclient.grpc._utils import _get_inference_request

from caravan.bench.answer import split_bytes, text_outputs
from caravan.bench.wire import bool_element, bytes_element, encode_request


def tritonclient_request(prompt: str, max_tokens: int, stream: bool, count: bool,
                         sampling: dict[str, object]) -> service_pb2.ModelInferRequest:
    """The same request built the documented tritonclient way (InferInput + numpy)."""
    def tensor(name: str, dtype: str, value: object) -> grpcclient.InferInput:
        t = grpcclient.InferInput(name, [1], dtype)
        t.set_data_from_numpy(np.array([value], dtype=np.object_ if dtype == "BYTES" else bool))
        return t

    params = json.dumps({**sampling, "max_tokens": max_tokens}).encode()
    inputs = [tensor("text_input", "BYTES", prompt.encode()), tensor("stream", "BOOL", stream),
              tensor("sampling_parameters", "BYTES", params),
              tensor("exclude_input_in_output", "BOOL", True)]
    if count:
        inputs += [tensor("return_num_input_tokens", "BOOL", True),
                   tensor("return_num_output_tokens", "BOOL", True)]
    return _get_inference_request(
        model_name="llama", inputs=inputs, model_version="", request_id="7", outputs=None,
        sequence_id=0, sequence_start=False, sequence_end=False, priority=0, timeout=None,
        parameters=None)


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("count", [True, False])
@pytest.mark.parametrize("prompt", ["hello world", "", "naïve ünïcode ✓"])
def test_encode_request_matches_tritonclient(stream: bool, count: bool, prompt: str) -> None:
    sampling = {"temperature": 0.5}
    ours = service_pb2.ModelInferRequest.FromString(
        encode_request("llama", "7", prompt, 12, stream=stream, count_tokens=count, sampling=sampling))
    assert ours == tritonclient_request(prompt, 12, stream, count, sampling)


def test_max_tokens_comes_from_the_request_not_sampling() -> None:
    req = service_pb2.ModelInferRequest.FromString(
        encode_request("m", "1", "p", 5, stream=True, sampling={"max_tokens": 99}))
    names = [t.name for t in req.inputs]
    raw = req.raw_input_contents[names.index("sampling_parameters")]
    assert json.loads(split_bytes(raw)[0]) == {"max_tokens": 5}


def test_elements() -> None:
    assert bytes_element(b"ab") == b"\x02\x00\x00\x00ab"
    assert bool_element(True) == b"\x01" and bool_element(False) == b"\x00"


def test_split_bytes_reads_several_elements_and_rejects_truncation() -> None:
    assert split_bytes(bytes_element(b"a") + bytes_element(b"") + bytes_element(b"xyz")) == [
        b"a", b"", b"xyz"]
    with pytest.raises(ValueError, match="runs past"):
        split_bytes(b"\x05\x00\x00\x00ab")
    with pytest.raises(ValueError, match="truncated length"):
        split_bytes(b"\x01\x00")


def test_text_outputs_raw_typed_and_absent() -> None:
    raw = service_pb2.ModelInferResponse()
    raw.outputs.add(name="num_output_tokens")
    raw.raw_output_contents.append((3).to_bytes(4, "little"))
    raw.outputs.add(name="text_output")
    raw.raw_output_contents.append(bytes_element(b"one two") + bytes_element(b"\xff"))
    assert text_outputs(raw) == ["one two", "\ufffd"]
    typed = service_pb2.ModelInferResponse()
    typed.outputs.add(name="text_output").contents.bytes_contents.append(b"hi")
    assert text_outputs(typed) == ["hi"]
    assert text_outputs(service_pb2.ModelInferResponse()) == []
