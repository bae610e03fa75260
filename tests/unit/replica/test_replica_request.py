"""Parsing and validating KServe v2 requests against the vLLM tensor contract."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from tritonclient.grpc import service_pb2 as pb

from caravan.replica.request import (
    GenerateRequest,
    RequestError,
    Sampling,
    Status,
    check_target,
    decode_bytes_elements,
    encode_bytes_elements,
    parse_request,
    parse_sampling,
)

MIB = 1 << 20


def bytes_raw(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def make(
    inputs: list[tuple[str, str, list[int], bytes]],
    *,
    rid: str = "r1",
    model: str = "llama",
    outputs: tuple[str, ...] = (),
) -> pb.ModelInferRequest:
    """A request with raw_input_contents, the way tritonclient sends it."""
    req = pb.ModelInferRequest(model_name=model, id=rid)
    for name, dtype, shape, raw in inputs:
        req.inputs.add(name=name, datatype=dtype, shape=shape)
        req.raw_input_contents.append(raw)
    for o in outputs:
        req.outputs.add(name=o)
    return req


def text(prompt: str = "hello world") -> tuple[str, str, list[int], bytes]:
    return ("text_input", "BYTES", [1], bytes_raw(prompt.encode()))


def flag(name: str, value: bool) -> tuple[str, str, list[int], bytes]:
    return (name, "BOOL", [1], b"\x01" if value else b"\x00")


def params(obj: Any) -> tuple[str, str, list[int], bytes]:
    raw = obj if isinstance(obj, str) else json.dumps(obj)
    return ("sampling_parameters", "BYTES", [1], bytes_raw(raw.encode()))


def parse(req: pb.ModelInferRequest, max_bytes: int = MIB) -> GenerateRequest:
    return parse_request(req, max_bytes)


def test_minimal_request_defaults() -> None:
    g = parse(make([text()]))
    assert g == GenerateRequest(
        request_id="r1", prompt="hello world", stream=False, prepend_input=True, sampling=Sampling()
    )


@pytest.mark.parametrize(
    ("flags", "stream", "prepend"),
    [
        ([], False, True),
        ([flag("stream", True)], True, False),
        ([flag("exclude_input_in_output", True)], False, False),
        ([flag("exclude_input_in_output", False)], False, True),
        ([flag("stream", True), flag("exclude_input_in_output", True)], True, False),
        ([flag("stream", False)], False, True),
    ],
    ids=["default", "stream", "exclude", "include", "stream-exclude", "stream-false"],
)
def test_prompt_is_prepended_like_the_vllm_backend(
    flags: list[Any], stream: bool, prepend: bool
) -> None:
    g = parse(make([text(), *flags]))
    assert (g.stream, g.prepend_input) == (stream, prepend)


def test_typed_contents_are_accepted_too() -> None:
    req = pb.ModelInferRequest(model_name="llama", id="t")
    t = req.inputs.add(name="text_input", datatype="BYTES", shape=[1])
    t.contents.bytes_contents.append(b"typed prompt")
    s = req.inputs.add(name="stream", datatype="BOOL", shape=[1])
    s.contents.bool_contents.append(True)
    g = parse(req)
    assert (g.prompt, g.stream) == ("typed prompt", True)


def test_optional_outputs_and_sampling() -> None:
    req = make(
        [
            text(),
            params({"max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 3}),
            flag("return_finish_reason", True),
            flag("return_num_input_tokens", True),
            flag("return_num_output_tokens", True),
        ],
        outputs=("text_output", "finish_reason"),
    )
    g = parse(req)
    assert g.sampling == Sampling(max_tokens=7, temperature=0.5, top_p=0.9, seed=3)
    assert (g.return_finish_reason, g.return_num_input_tokens, g.return_num_output_tokens) == (
        True,
        True,
        True,
    )
    assert g.requested_outputs == frozenset({"text_output", "finish_reason"})


BAD = [
    ("missing-text", make([flag("stream", True)]), "missing required input(s) ['text_input']"),
    (
        "wrong-datatype",
        make([("text_input", "INT32", [1], b"\0\0\0\0")]),
        "unexpected datatype INT32 for inference input 'text_input', expecting BYTES",
    ),
    (
        "bool-as-bytes",
        make([text(), ("stream", "BYTES", [1], bytes_raw(b"true"))]),
        "unexpected datatype BYTES for inference input 'stream', expecting BOOL",
    ),
    (
        "bad-shape",
        make([("text_input", "BYTES", [1, 1], bytes_raw(b"x"))]),
        "unexpected shape for input 'text_input' for model 'llama'. Expected [1], got [1, 1]",
    ),
    (
        "two-elements",
        make([("text_input", "BYTES", [1], bytes_raw(b"a", b"b"))]),
        "input 'text_input': expected 1 BYTES element, got 2",
    ),
    (
        "truncated-bytes",
        make([("text_input", "BYTES", [1], b"\x09\x00\x00\x00abc")]),
        "input 'text_input': BYTES element of 9 bytes runs past the end",
    ),
    (
        "unknown-input",
        make([text(), ("foo", "BYTES", [1], bytes_raw(b"x"))]),
        "unexpected inference input 'foo' for model 'llama'",
    ),
    ("duplicate-input", make([text(), text()]), "input 'text_input' is given more than once"),
    ("empty-prompt", make([text("   ")]), "input 'text_input': the prompt must not be empty"),
    (
        "not-utf8",
        make([("text_input", "BYTES", [1], bytes_raw(b"\xff\xfe"))]),
        "input 'text_input': not valid UTF-8",
    ),
    ("bad-json", make([text(), params("{max_tokens: 5")]), "sampling_parameters: invalid JSON"),
    (
        "json-not-object",
        make([text(), params([1, 2])]),
        "sampling_parameters: expected a JSON object, got list",
    ),
    (
        "max-tokens-zero",
        make([text(), params({"max_tokens": 0})]),
        "sampling_parameters.max_tokens: must be an integer >= 1 (got 0)",
    ),
    (
        "max-tokens-negative",
        make([text(), params({"max_tokens": -5})]),
        "sampling_parameters.max_tokens: must be an integer >= 1 (got -5)",
    ),
    (
        "max-tokens-float",
        make([text(), params({"max_tokens": 2.5})]),
        "sampling_parameters.max_tokens: must be an integer >= 1 (got 2.5)",
    ),
    (
        "max-tokens-text",
        make([text(), params({"max_tokens": "lots"})]),
        "sampling_parameters.max_tokens: must be an integer >= 1 (got 'lots')",
    ),
    (
        "max-tokens-bool",
        make([text(), params({"max_tokens": True})]),
        "sampling_parameters.max_tokens: must be an integer >= 1 (got True)",
    ),
    (
        "temperature",
        make([text(), params({"temperature": -1})]),
        "sampling_parameters.temperature: must be a number >= 0 (got -1)",
    ),
    (
        "top-p",
        make([text(), params({"top_p": 0})]),
        "sampling_parameters.top_p: must be a number in (0, 1] (got 0)",
    ),
    ("n", make([text(), params({"n": 2})]), "sampling_parameters.n: only n=1 is simulated (got 2)"),
    (
        "unknown-key",
        make([text(), params({"max_tokenz": 5})]),
        "sampling_parameters: unknown key(s) ['max_tokenz']",
    ),
    (
        "stream-with-input",
        make([text(), flag("stream", True), flag("exclude_input_in_output", False)]),
        "When streaming, `exclude_input_in_output` = False is not allowed.",
    ),
    (
        "bool-size",
        make([text(), ("stream", "BOOL", [1], b"\x01\x01")]),
        "input 'stream': expected 1 byte of BOOL data, got 2",
    ),
    (
        "raw-count",
        pb.ModelInferRequest(
            model_name="llama",
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name="text_input", datatype="BYTES", shape=[1]
                )
            ],
            raw_input_contents=[b"", b""],
        ),
        "expected 1 raw input contents (one per input), got 2",
    ),
    (
        "unknown-output",
        make([text()], outputs=("logits",)),
        "unexpected inference output 'logits' for model 'llama'",
    ),
]


@pytest.mark.parametrize(
    ("req", "message"), [(r, m) for _, r, m in BAD], ids=[i for i, _, _ in BAD]
)
def test_bad_requests_are_invalid_argument_naming_the_tensor(
    req: pb.ModelInferRequest, message: str
) -> None:
    with pytest.raises(RequestError) as info:
        parse(req)
    assert info.value.status is Status.INVALID_ARGUMENT
    assert message in info.value.message
    assert info.value.message.startswith(f"[request id: {req.id or '<id_unknown>'}] ")


def test_input_larger_than_the_limit_is_refused() -> None:
    with pytest.raises(RequestError) as info:
        parse(make([text("word " * 300)]), max_bytes=1000)
    assert info.value.status is Status.INVALID_ARGUMENT
    assert (
        "input 'text_input' is 1504 bytes, larger than the limit of 1000 bytes"
        in info.value.message
    )


@pytest.mark.parametrize(
    ("model", "version", "message"),
    [
        ("other", "", "Request for unknown model: 'other' is not found"),
        ("llama", "2", "Request for unknown model: 'llama' version 2 is not found"),
    ],
    ids=["unknown-model", "unknown-version"],
)
def test_unknown_model_or_version_is_not_found(model: str, version: str, message: str) -> None:
    with pytest.raises(RequestError) as info:
        check_target(pb.ModelInferRequest(model_name=model, model_version=version), "llama")
    assert (info.value.status, info.value.message) == (Status.NOT_FOUND, message)


@pytest.mark.parametrize("version", ["", "1"], ids=["default", "v1"])
def test_known_model_passes(version: str) -> None:
    check_target(pb.ModelInferRequest(model_name="llama", model_version=version), "llama")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"max_tokens": "64"}', Sampling(max_tokens=64)),
        ('{"max_tokens": 64.0, "seed": "-3"}', Sampling(max_tokens=64, seed=-3)),
        ('{"max_tokens": null, "temperature": "0.2"}', Sampling(temperature=0.2)),
        ('{"top_k": -1, "ignore_eos": true, "stop": ["x"]}', Sampling()),
    ],
    ids=["string-int", "integral-float", "null-dropped", "known-keys-accepted"],
)
def test_sampling_values_are_converted_like_the_backend(raw: str, expected: Sampling) -> None:
    assert parse_sampling(raw) == expected


@pytest.mark.parametrize(
    "items",
    [[], [b""], [b"abc", b"", "ünï".encode()]],
    ids=["none", "empty", "several"],
)
def test_bytes_elements_round_trip(items: list[bytes]) -> None:
    assert decode_bytes_elements(encode_bytes_elements(items), "t") == items
