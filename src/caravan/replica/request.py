"""Parse and validate a KServe v2 ``ModelInferRequest`` against the vLLM tensor
contract (pure: protobuf in, frozen dataclass or ``RequestError`` out).

Errors imitate Triton's wording and status codes: ``NOT_FOUND`` for an unknown model
or version (``Request for unknown model: 'x' is not found``), ``INVALID_ARGUMENT``
naming the tensor or field for everything else. Messages start with
``[request id: <id>]`` like Triton's (``<id_unknown>`` when the request has no id).

Tensor data may come as ``raw_input_contents`` (what tritonclient sends; BYTES
elements are 4-byte little-endian length-prefixed, BOOL is one byte per element) or as
typed ``contents`` (``bytes_contents`` / ``bool_contents``); a request uses one or the
other for all inputs.

``exclude_input_in_output`` follows the vLLM backend: when absent, the prompt is
prepended to the output of non-streaming requests and not to streaming ones;
``exclude_input_in_output=false`` together with ``stream=true`` is an error.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass
from typing import Any

from tritonclient.grpc import service_pb2 as pb

from caravan import tensor_bytes
from caravan.replica.contract import INPUTS_BY_NAME, MODEL_VERSION, OUTPUTS, TensorSpec

OUTPUT_NAMES = frozenset(t.name for t in OUTPUTS)

# vLLM SamplingParams fields (plus the backend's lora_name); others are rejected,
# as vLLM's SamplingParams(**params) would.
_SAMPLING_KEYS = """n best_of presence_penalty frequency_penalty
repetition_penalty temperature top_p top_k min_p seed stop stop_token_ids bad_words
include_stop_str_in_output ignore_eos max_tokens min_tokens logprobs prompt_logprobs
detokenize skip_special_tokens spaces_between_special_tokens logits_processors
truncate_prompt_tokens output_kind guided_decoding structured_outputs logit_bias
allowed_token_ids extra_args lora_name"""
KNOWN_SAMPLING_KEYS = frozenset(_SAMPLING_KEYS.split())


class Status(enum.Enum):
    """gRPC status names (mapped to ``grpc.StatusCode`` by the server)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    UNAVAILABLE = "UNAVAILABLE"


class RequestError(Exception):
    """A request Triton would refuse: ``status`` + human message."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Sampling:
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class GenerateRequest:
    """A validated generation request."""

    request_id: str
    prompt: str
    stream: bool
    prepend_input: bool
    sampling: Sampling
    return_finish_reason: bool = False
    return_num_input_tokens: bool = False
    return_num_output_tokens: bool = False
    requested_outputs: frozenset[str] | None = None  # None: every produced output


def check_target(req: pb.ModelInferRequest, model: str) -> None:
    """NOT_FOUND unless the request names this model (and version "" or "1")."""
    if req.model_name != model:
        raise RequestError(
            Status.NOT_FOUND, f"Request for unknown model: '{req.model_name}' is not found"
        )
    if req.model_version not in ("", MODEL_VERSION):
        raise RequestError(
            Status.NOT_FOUND,
            f"Request for unknown model: '{req.model_name}' "
            f"version {req.model_version} is not found",
        )


def parse_request(req: pb.ModelInferRequest, max_input_bytes: int) -> GenerateRequest:
    """Validate inputs and outputs; raise RequestError (INVALID_ARGUMENT) on any problem."""
    tag = f"[request id: {req.id or '<id_unknown>'}] "
    values = _input_values(req, max_input_bytes, tag)
    if "text_input" not in values:
        got = [i.name for i in req.inputs]
        raise _invalid(
            tag,
            f"expected 1 inputs but got {len(got)} inputs for model '{req.model_name}'. "
            f"Got input(s) {got}, but missing required input(s) ['text_input']. "
            "Please provide all required input(s).",
        )
    prompt = _utf8(values["text_input"], "text_input", tag)
    if not prompt.strip():
        raise _invalid(tag, "input 'text_input': the prompt must not be empty")
    stream = bool(values.get("stream", False))
    exclude = values.get("exclude_input_in_output")
    if stream and exclude is False:
        raise _invalid(tag, "When streaming, `exclude_input_in_output` = False is not allowed.")
    sampling = Sampling()
    if "sampling_parameters" in values:
        sampling = parse_sampling(
            _utf8(values["sampling_parameters"], "sampling_parameters", tag), tag
        )
    return GenerateRequest(
        request_id=req.id,
        prompt=prompt,
        stream=stream,
        prepend_input=(not exclude) if exclude is not None else not stream,
        sampling=sampling,
        return_finish_reason=bool(values.get("return_finish_reason", False)),
        return_num_input_tokens=bool(values.get("return_num_input_tokens", False)),
        return_num_output_tokens=bool(values.get("return_num_output_tokens", False)),
        requested_outputs=_requested_outputs(req, tag),
    )


def _invalid(tag: str, msg: str) -> RequestError:
    return RequestError(Status.INVALID_ARGUMENT, tag + msg)


def _input_values(req: pb.ModelInferRequest, max_input_bytes: int, tag: str) -> dict[str, Any]:
    raw = list(req.raw_input_contents)
    if raw and len(raw) != len(req.inputs):
        raise _invalid(
            tag, f"expected {len(req.inputs)} raw input contents (one per input), got {len(raw)}"
        )
    values: dict[str, Any] = {}
    for i, tensor in enumerate(req.inputs):
        spec = INPUTS_BY_NAME.get(tensor.name)
        if spec is None:
            raise _invalid(
                tag, f"unexpected inference input '{tensor.name}' for model '{req.model_name}'"
            )
        if tensor.name in values:
            raise _invalid(tag, f"input '{tensor.name}' is given more than once")
        _check_type_and_shape(tensor, spec, req.model_name, tag)
        values[tensor.name] = _decode(tensor, spec, raw[i] if raw else None, max_input_bytes, tag)
    return values


def _check_type_and_shape(tensor: Any, spec: TensorSpec, model: str, tag: str) -> None:
    if tensor.datatype != spec.datatype:
        raise _invalid(
            tag,
            f"unexpected datatype {tensor.datatype or '<none>'} for inference input "
            f"'{tensor.name}', expecting {spec.datatype} for model '{model}'",
        )
    if list(tensor.shape) != list(spec.dims):
        raise _invalid(
            tag,
            f"unexpected shape for input '{tensor.name}' for model '{model}'. "
            f"Expected {list(spec.dims)}, got {list(tensor.shape)}",
        )


def _decode(tensor: Any, spec: TensorSpec, raw: bytes | None, max_bytes: int, tag: str) -> Any:
    name = tensor.name
    size = len(raw) if raw is not None else sum(len(b) for b in tensor.contents.bytes_contents)
    if size > max_bytes:
        raise _invalid(
            tag, f"input '{name}' is {size} bytes, larger than the limit of {max_bytes} bytes"
        )
    if spec.datatype == "BOOL":
        if raw is not None:
            if len(raw) != 1:
                raise _invalid(tag, f"input '{name}': expected 1 byte of BOOL data, got {len(raw)}")
            return raw != b"\x00"
        items = list(tensor.contents.bool_contents)
        if len(items) != 1:
            raise _invalid(
                tag, f"input '{name}': expected 1 bool_contents element, got {len(items)}"
            )
        return bool(items[0])
    elements = (
        decode_bytes_elements(raw, name, tag)
        if raw is not None
        else list(tensor.contents.bytes_contents)
    )
    if len(elements) != 1:
        raise _invalid(tag, f"input '{name}': expected 1 BYTES element, got {len(elements)}")
    return elements[0]


def decode_bytes_elements(raw: bytes, name: str, tag: str = "") -> list[bytes]:
    """Split raw BYTES tensor data (4-byte little-endian length + bytes, repeated);
    ``RequestError`` INVALID_ARGUMENT naming input ``name`` when it is malformed."""
    try:
        return tensor_bytes.decode_bytes_elements(raw)
    except tensor_bytes.BytesLayoutError as exc:
        if exc.length is None:
            raise _invalid(tag, f"input '{name}': truncated BYTES length prefix at offset {exc.offset}") from None
        raise _invalid(
            tag, f"input '{name}': BYTES element of {exc.length} bytes runs past the end of the data"
        ) from None


encode_bytes_elements = tensor_bytes.encode_bytes_elements


def _utf8(data: bytes, name: str, tag: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(
            tag, f"input '{name}': not valid UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None


def _requested_outputs(req: pb.ModelInferRequest, tag: str) -> frozenset[str] | None:
    if not req.outputs:
        return None
    names = frozenset(o.name for o in req.outputs)
    extra = sorted(names - OUTPUT_NAMES)
    if extra:
        raise _invalid(
            tag, f"unexpected inference output '{extra[0]}' for model '{req.model_name}'"
        )
    return names


def parse_sampling(text: str, tag: str = "") -> Sampling:
    """Validate the ``sampling_parameters`` JSON (vLLM SamplingParams keys)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _invalid(
            tag,
            f"sampling_parameters: invalid JSON ({exc.msg} at line {exc.lineno} "
            f"column {exc.colno})",
        ) from None
    if not isinstance(data, dict):
        raise _invalid(
            tag, f"sampling_parameters: expected a JSON object, got {type(data).__name__}"
        )
    data = {k: v for k, v in data.items() if v is not None}
    unknown = sorted(set(data) - KNOWN_SAMPLING_KEYS)
    if unknown:
        raise _invalid(
            tag,
            f"sampling_parameters: unknown key(s) {unknown}; expected vLLM "
            "SamplingParams fields such as max_tokens, temperature, top_p, top_k, seed",
        )
    max_tokens = _int(data, "max_tokens", tag, minimum=1)
    n = _int(data, "n", tag, minimum=1)
    if n is not None and n != 1:
        raise _invalid(tag, f"sampling_parameters.n: only n=1 is simulated (got {n})")
    _int(data, "top_k", tag, minimum=-1)
    _int(data, "min_tokens", tag, minimum=0)
    temperature = _float(data, "temperature", tag, 0.0, math.inf, "a number >= 0")
    top_p = _float(data, "top_p", tag, 0.0, 1.0, "a number in (0, 1]")
    if top_p is not None and top_p == 0.0:
        raise _invalid(tag, "sampling_parameters.top_p: must be a number in (0, 1] (got 0)")
    return Sampling(
        max_tokens=max_tokens,
        temperature=1.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        seed=_int(data, "seed", tag, minimum=None),
    )


def _int(data: dict[str, Any], key: str, tag: str, minimum: int | None) -> int | None:
    """An integer field; like the vLLM backend, integer strings ("100") are accepted."""
    if key not in data:
        return None
    v = data[key]
    ok = (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
        or (isinstance(v, str) and v.strip().lstrip("-").isdigit())
    )
    want = "an integer" if minimum is None else f"an integer >= {minimum}"
    if not ok:
        raise _invalid(tag, f"sampling_parameters.{key}: must be {want} (got {v!r})")
    value = int(v)
    if minimum is not None and value < minimum:
        raise _invalid(tag, f"sampling_parameters.{key}: must be {want} (got {value})")
    return value


def _float(
    data: dict[str, Any], key: str, tag: str, lo: float, hi: float, want: str
) -> float | None:
    if key not in data:
        return None
    v = data[key]
    try:
        if isinstance(v, bool):
            raise ValueError
        value = float(v)
    except (TypeError, ValueError):
        raise _invalid(tag, f"sampling_parameters.{key}: must be {want} (got {v!r})") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise _invalid(tag, f"sampling_parameters.{key}: must be {want} (got {v!r})")
    return value
