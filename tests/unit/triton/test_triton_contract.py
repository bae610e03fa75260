"""caravan.triton.contract: the vLLM backend's request parsing, sampling parameters and
outputs, pure (docs/triton-contract.md C15, C21-C30)."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np
import pytest
from triton_fakes import flag, text

from caravan.simulator.textgen import VOCAB
from caravan.triton import contract
from caravan.triton.contract import (
    ContractError,
    GenerateRequest,
    Piece,
    Sampling,
    SamplingParamsError,
    output_arrays,
    parse_request,
    parse_sampling,
    sampling_text,
    verify_loras,
)

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDAAAANHQEDas"
                       "Kb6QAAAABJRU5ErkJggg==")


def inputs(**kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"text_input": text("hello world")}
    for k, v in kw.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, bool):
            out[k] = flag(v)
        elif isinstance(v, list):
            out[k] = np.array(v, dtype=np.object_)
        else:
            out[k] = text(v)
    return out


# -- execute(): sampling text and LoRA (C24, C26a, C30) ------------------------------

@pytest.mark.parametrize(("given", "params", "want"), [
    ({}, '{"max_tokens": 3}', '{"max_tokens": 3}'),
    ({"sampling_parameters": '{"max_tokens": 2}'}, '{"max_tokens": 3}', '{"max_tokens": 2}'),
    ({"sampling_parameters": ""}, '{"max_tokens": 3}', ""),
], ids=["parameters", "tensor-wins", "empty-tensor"])
def test_sampling_text_prefers_the_tensor(given: dict[str, str], params: str, want: str) -> None:
    assert sampling_text(inputs(**given), params) == want


def test_sampling_text_not_utf8_raises() -> None:
    with pytest.raises(UnicodeDecodeError):
        sampling_text({"sampling_parameters": text(b"\xff\xfe")}, "{}")


@pytest.mark.parametrize(("text_", "want"), [
    ("{}", None),
    ('{"lora_name": null, "max_tokens": 2}', None),
    ('{"lora_name": "adapter"}', "LoRA feature is not enabled."),
], ids=["none", "null", "named"])
def test_verify_loras(text_: str, want: str | None) -> None:
    assert verify_loras(text_) == want


@pytest.mark.parametrize(("text_", "exc"), [
    ("not json", json.JSONDecodeError),
    ("", json.JSONDecodeError),
    ("[1, 2]", TypeError),
    ('"text"', AttributeError),
    ("7", AttributeError),
    ("null", AttributeError),
], ids=["not-json", "empty", "array", "string", "number", "null"])
def test_verify_loras_raises_for_text_not_a_json_object(text_: str, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        verify_loras(text_)


# -- _infer(): the request's inputs (C15, C22, C23, C29, C30) ------------------------

@pytest.mark.parametrize(("given", "prompt", "stream", "prepend", "returns"), [
    ({}, "hello world", False, True, frozenset()),
    ({"stream": False}, "hello world", False, True, frozenset()),
    ({"exclude_input_in_output": True}, "hello world", False, False, frozenset()),
    ({"exclude_input_in_output": False}, "hello world", False, True, frozenset()),
    ({"stream": True}, "hello world", True, False, frozenset()),
    ({"stream": True, "exclude_input_in_output": True}, "hello world", True, False, frozenset()),
    ({"return_finish_reason": True, "return_logprobs": False, "return_num_output_tokens": True}, "hello world",
     False, True, frozenset({"return_finish_reason", "return_num_output_tokens"})),
    ({"text_input": "héllo"}, "héllo", False, True, frozenset()),
], ids=["defaults", "stream-false", "exclude", "exclude-false", "stream", "stream-exclude", "returns", "utf8"])
def test_parse_request(given: dict[str, Any], prompt: str, stream: bool, prepend: bool,
                       returns: frozenset[str]) -> None:
    req = parse_request(inputs(**given), "{}", "m")
    assert (req.prompt, req.stream, req.prepend_input, req.returns, req.images) == (
        prompt, stream, prepend, returns, 0)
    assert req.sampling == Sampling(max_tokens=16)


def test_parse_request_counts_images() -> None:
    png = base64.b64encode(PNG)
    wrapped = b"\n".join(png[i:i + 20] for i in range(0, len(png), 20))  # b64decode ignores line breaks
    assert parse_request(inputs(image=[png, wrapped]), "{}", "m").images == 2


@pytest.mark.parametrize(("given", "message"), [
    ({"embedding_request": '{"input": "x"}'}, "Model m does not support 'embed' request"),
    ({"embedding_request": '{"input": "x"}', "text_input": None}, "Model m does not support 'embed' request"),
    ({"text_input": None, "stream": False}, "'NoneType' object has no attribute 'as_numpy'"),
    ({"text_input": b"\xff"}, "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
    ({"image": [b"not base64!!"], "stream": True, "exclude_input_in_output": False},
     "Invalid base64-encoded string: number of data characters (9) cannot be 1 more than a multiple of 4"),
    ({"image": [b"aGVsbG8"]}, "Incorrect padding"),
    ({"image": [base64.b64encode(b"hello")]}, "cannot identify image file"),
    ({"stream": True, "exclude_input_in_output": False},
     "When streaming, `exclude_input_in_output` = False is not allowed."),
    ({"sampling_parameters": '{"n": 2}'}, "n=2: the simulated engine generates one sequence per request"),
], ids=["embedding", "embedding-first", "no-text-input", "not-utf8", "image-before-stream-check",
        "image-padding", "not-an-image", "stream-exclude-false", "n-simulated"])
def test_parse_request_errors_in_the_backends_order(given: dict[str, Any], message: str) -> None:
    with pytest.raises(ContractError) as err:
        parse_request(inputs(**given), "{}", "m")
    assert str(err.value).startswith(message)
    assert not isinstance(err.value, SamplingParamsError)


def test_parse_request_uses_request_parameters_without_the_tensor() -> None:
    assert parse_request(inputs(), '{"max_tokens": "3", "seed": 7}', "m").sampling == Sampling(3, 7, None)


# -- sampling parameters: from_dict + vLLM's checks (C24, C25, C26b) ----------------

@pytest.mark.parametrize(("params", "want"), [
    ({}, Sampling(16, None, None)),
    ({"max_tokens": 64}, Sampling(64)),
    ({"max_tokens": "64"}, Sampling(64)),
    ({"max_tokens": 64.9}, Sampling(64)),
    ({"max_tokens": True}, Sampling(1)),
    ({"seed": 5, "logprobs": 2}, Sampling(16, 5, 2)),
    ({"seed": -1}, Sampling(16, None)),
    ({"logprobs": -1}, Sampling(16, None, -1)),
    ({"logprobs": True}, Sampling(16, None, 1)),
    ({"temperature": "0", "top_p": "0.5", "top_k": -1, "min_p": 1}, Sampling()),
    ({"temperature": 2, "presence_penalty": -2, "frequency_penalty": 2, "repetition_penalty": 1.1}, Sampling()),
    ({"ignore_eos": "false"}, Sampling()),  # bool("false") is True: accepted
    ({"stop": "\n", "stop_token_ids": [1, 2, 1], "bad_words": ["x"]}, Sampling()),
    ({"stop": ["a", "bc"], "include_stop_str_in_output": True}, Sampling()),
    ({"structured_outputs": json.dumps({"regex": "[a-z]+"})}, Sampling()),
    ({"lora_name": None, "n": 1, "min_tokens": 16}, Sampling()),
    ({"thinking_token_budget": -1, "stream_interval": 1}, Sampling()),
], ids=["empty", "int", "string-int", "float-truncated", "bool-int", "seed-logprobs", "seed-minus-one",
        "logprobs-all", "logprobs-true", "coerced-floats", "range-edges", "bool-quirk", "stop-string",
        "stop-list", "structured", "nulls-allowed", "budget"])
def test_parse_sampling_accepts(params: dict[str, Any], want: Sampling) -> None:
    assert parse_sampling(json.dumps(params)) == want


@pytest.mark.parametrize("params", [
    {"no_such_key": 1},
    {"best_of": 2},
    {"max_tokens": None},
    {"seed": None},
    {"max_tokens": "many"},
    {"max_tokens": "64.0"},
    {"max_tokens": 0},
    {"min_tokens": 5, "max_tokens": 4},
    {"min_tokens": -1},
    {"temperature": 2.5},
    {"temperature": -0.1},
    {"temperature": "hot"},
    {"top_p": 0},
    {"top_p": 1.5},
    {"top_k": -2},
    {"min_p": 1.5},
    {"presence_penalty": 3},
    {"frequency_penalty": -3},
    {"repetition_penalty": 0},
    {"n": 0},
    {"n": 2, "temperature": 0},
    {"logprobs": -2},
    {"prompt_logprobs": -5},
    {"stream_interval": 0},
    {"thinking_token_budget": -2},
    {"stop": [""]},
    {"stop": [1]},
    {"stop": 5},
    {"stop": "x", "detokenize": False},
    {"stop_token_ids": ["a"]},
    {"bad_words": [""]},
    {"structured_outputs": {"regex": "x"}},
    {"structured_outputs": json.dumps({})},
    {"structured_outputs": json.dumps({"regex": "x", "choice": ["a"]})},
    {"structured_outputs": json.dumps({"regex": "x", "nope": 1})},
], ids=lambda p: ",".join(f"{k}={v!r}" for k, v in p.items()))
def test_parse_sampling_rejects_like_from_dict(params: dict[str, Any]) -> None:
    with pytest.raises(SamplingParamsError) as err:
        parse_sampling(json.dumps(params))
    assert str(err.value) == "'NoneType' object has no attribute 'lora_name'"
    assert err.value.detail


@pytest.mark.parametrize("text_", ["[1]", '"s"', "not json", ""], ids=["array", "string", "not-json", "empty"])
def test_parse_sampling_rejects_text_not_a_json_object(text_: str) -> None:
    with pytest.raises(SamplingParamsError):
        parse_sampling(text_)


def test_sampling_error_detail_names_the_cause() -> None:
    with pytest.raises(SamplingParamsError) as err:
        parse_sampling('{"no_such_key": 1}')
    assert err.value.detail == "Unexpected keyword argument 'no_such_key'"


# -- outputs (C21, C22, C28) --------------------------------------------------------

def request(returns: set[str], logprobs: int | None = None) -> GenerateRequest:
    return GenerateRequest("p", 0, True, False, Sampling(16, None, logprobs), frozenset(returns))


PIECE = Piece(" a b", num_input_tokens=7, num_output_tokens=2, finish_reason=None, token_words=("a", "b"),
              total_output_tokens=6)


@pytest.mark.parametrize(("returns", "dtypes", "shapes"), [
    (set(), {"text_output": object}, {"text_output": (1,)}),
    (set(contract.RETURN_FLAGS),
     {"text_output": object, "finish_reason": object, "cumulative_logprob": np.float32, "logprobs": object,
      "num_input_tokens": np.uint32, "num_output_tokens": np.uint32},
     {"text_output": (1,), "finish_reason": (1,), "cumulative_logprob": (1,), "logprobs": (1,),
      "num_input_tokens": (), "num_output_tokens": (1,)}),
    ({"return_num_input_tokens"}, {"text_output": object, "num_input_tokens": np.uint32},
     {"text_output": (1,), "num_input_tokens": ()}),
], ids=["none", "all", "num-input-scalar"])
def test_output_arrays_dtypes_and_shapes(returns: set[str], dtypes: dict[str, Any],
                                         shapes: dict[str, tuple[int, ...]]) -> None:
    out = output_arrays(request(returns), PIECE)
    assert {k: v.dtype for k, v in out.items()} == {k: np.dtype(v) for k, v in dtypes.items()}
    assert {k: v.shape for k, v in out.items()} == shapes


def test_output_values() -> None:
    out = output_arrays(request(set(contract.RETURN_FLAGS)), PIECE)
    assert out["text_output"].tolist() == [b" a b"]
    assert out["finish_reason"].tolist() == ["None"]
    assert math.isnan(float(out["cumulative_logprob"][0]))  # no `logprobs` sampling parameter
    assert out["logprobs"].tolist() == [b"null"]
    assert int(out["num_input_tokens"]) == 7 and out["num_output_tokens"].tolist() == [2]
    final = output_arrays(request({"return_finish_reason"}), Piece("", 7, 0, "length"))
    assert final["finish_reason"].tolist() == ["length"]


@pytest.mark.parametrize(("k", "width"), [(0, 1), (1, 1), (3, 3), (-1, len(VOCAB)), (10_000, len(VOCAB))],
                         ids=["zero", "one", "three", "all", "capped"])
def test_logprobs_with_the_sampling_parameter(k: int, width: int) -> None:
    out = output_arrays(request({"return_logprobs", "return_cumulative_logprob"}, logprobs=k), PIECE)
    assert float(out["cumulative_logprob"][0]) == pytest.approx(-0.25 * 6)  # cumulative over 6 tokens
    entries = json.loads(out["logprobs"][0])
    assert len(entries) == 2  # one per token of this piece
    for word, entry in zip(("a", "b"), entries, strict=True):
        assert len(entry) == width
        ranked = sorted(entry.values(), key=lambda e: e["rank"])
        assert [e["rank"] for e in ranked] == list(range(1, width + 1))
        assert ranked[0]["decoded_token"] == " " + word
        assert all(set(e) == {"logprob", "rank", "decoded_token"} for e in ranked)
