"""The Triton vLLM backend's request/response contract, as pure functions over numpy.

Source: triton-inference-server/vllm_backend ``src/model.py``
(``TritonPythonModel._auto_complete_inputs_and_outputs``) and ``src/utils/request.py``
(``GenerateRequest._get_input_tensors``, ``GenerateRequest.create_response``). Triton's
core already refuses requests whose tensors do not match the config (unknown or missing
inputs, wrong type or shape), so this module only does what the backend itself does:

* ``stream``: absent means false. ``exclude_input_in_output``: absent means "prepend the
  prompt" for non-streaming requests and "do not" for streaming ones; false together
  with ``stream=true`` is an error.
* Sampling parameters: the ``sampling_parameters`` tensor (JSON) when given, else the
  request's own parameters (JSON). ``max_tokens`` defaults to 16 (vLLM's
  ``SamplingParams`` default).
* ``image`` (optional, base64 elements) must decode; ``embedding_request`` is refused on a
  generative model ("Model M does not support 'embed' request").
* Errors are raised as ``ContractError``; the model reports them in-stream as the backend
  does: ``"Error generating stream: <message>"`` with ``text_output`` ``"N/A"``.

Outputs are built as numpy arrays with the backend's dtypes: BYTES as ``np.object_``,
``cumulative_logprob`` float32, ``num_input_tokens`` a 0-d uint32 (the backend's
``np.asarray(n, dtype=np.uint32)``), ``num_output_tokens`` uint32 [1].
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

DEFAULT_MAX_TOKENS = 16  # vllm.SamplingParams.max_tokens default
ERROR_PREFIX = "Error generating stream: "
ERROR_TEXT_OUTPUT = "N/A"

# name, Triton config type, dims, optional: the backend's auto-completed config.
INPUTS: tuple[tuple[str, str, tuple[int, ...], bool], ...] = (
    ("text_input", "TYPE_STRING", (1,), False),
    ("image", "TYPE_STRING", (-1,), True),
    ("stream", "TYPE_BOOL", (1,), True),
    ("sampling_parameters", "TYPE_STRING", (1,), True),
    ("exclude_input_in_output", "TYPE_BOOL", (1,), True),
    ("return_finish_reason", "TYPE_BOOL", (1,), True),
    ("return_cumulative_logprob", "TYPE_BOOL", (1,), True),
    ("return_logprobs", "TYPE_BOOL", (1,), True),
    ("return_num_input_tokens", "TYPE_BOOL", (1,), True),
    ("return_num_output_tokens", "TYPE_BOOL", (1,), True),
    ("embedding_request", "TYPE_STRING", (1,), True),
)
OUTPUTS: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("text_output", "TYPE_STRING", (-1,)),
    ("finish_reason", "TYPE_STRING", (-1,)),
    ("cumulative_logprob", "TYPE_FP32", (-1,)),
    ("logprobs", "TYPE_STRING", (-1,)),
    ("num_input_tokens", "TYPE_UINT32", (1,)),
    ("num_output_tokens", "TYPE_UINT32", (-1,)),
)
RETURN_FLAGS = (
    "return_finish_reason",
    "return_cumulative_logprob",
    "return_logprobs",
    "return_num_input_tokens",
    "return_num_output_tokens",
)
IMAGE_TOKENS = 576  # prompt tokens one image costs (a LLaVA-style 24x24 patch grid)

# vLLM SamplingParams fields (plus the backend's lora_name); others make
# SamplingParams(**params) raise, so the request fails.
KNOWN_SAMPLING_KEYS = frozenset((
    "n", "best_of", "presence_penalty", "frequency_penalty", "repetition_penalty",
    "temperature", "top_p", "top_k", "min_p", "seed", "stop", "stop_token_ids", "bad_words",
    "include_stop_str_in_output", "ignore_eos", "max_tokens", "min_tokens", "logprobs",
    "prompt_logprobs", "detokenize", "skip_special_tokens", "spaces_between_special_tokens",
    "logits_processors", "truncate_prompt_tokens", "output_kind", "guided_decoding",
    "structured_outputs", "logit_bias", "allowed_token_ids", "extra_args", "lora_name",
))

Arrays = Mapping[str, npt.NDArray[Any]]


class ContractError(ValueError):
    """The backend would fail this request; ``str(err)`` is the reason."""


@dataclass(frozen=True)
class Sampling:
    """The sampling parameters the simulator uses (validated)."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    seed: int | None = None
    logprobs: int | None = None


@dataclass(frozen=True)
class GenerateRequest:
    """One validated generation request."""

    prompt: str
    images: int
    stream: bool
    prepend_input: bool
    sampling: Sampling
    returns: frozenset[str] = frozenset()


def parse_request(inputs: Arrays, parameters_json: str, model: str) -> GenerateRequest:
    """Read a request the way the vLLM backend does. Raises ContractError."""
    if "embedding_request" in inputs:
        raise ContractError(f"Model {model} does not support 'embed' request")
    prompt = _text(inputs["text_input"], "text_input")
    stream = _flag(inputs, "stream")
    exclude = inputs.get("exclude_input_in_output")
    prepend = not bool(exclude.reshape(-1)[0]) if exclude is not None else not stream
    if prepend and stream:
        raise ContractError("When streaming, `exclude_input_in_output` = False is not allowed.")
    params = inputs.get("sampling_parameters")
    text = _text(params, "sampling_parameters") if params is not None else parameters_json
    return GenerateRequest(
        prompt=prompt,
        images=_count_images(inputs.get("image")),
        stream=stream,
        prepend_input=prepend,
        sampling=parse_sampling(text or "{}"),
        returns=frozenset(name for name in RETURN_FLAGS if _flag(inputs, name)),
    )


def _flag(inputs: Arrays, name: str) -> bool:
    arr = inputs.get(name)
    return bool(arr.reshape(-1)[0]) if arr is not None and arr.size else False


def _text(arr: npt.NDArray[Any], name: str) -> str:
    value = arr.reshape(-1)[0]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ContractError(f"{name}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    return str(value)


def _count_images(arr: npt.NDArray[Any] | None) -> int:
    if arr is None:
        return 0
    for i, item in enumerate(arr.reshape(-1)):
        data = item if isinstance(item, bytes) else str(item).encode()
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ContractError(f"image[{i}]: not valid base64") from None
    return int(arr.size)


def parse_sampling(text: str) -> Sampling:
    """Validate sampling parameters JSON (vLLM ``SamplingParams`` keys). Raises ContractError."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ContractError(f"sampling parameters: invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, dict):
        raise ContractError(f"sampling parameters: expected a JSON object, got {type(data).__name__}")
    data = {k: v for k, v in data.items() if v is not None}
    unknown = sorted(set(data) - KNOWN_SAMPLING_KEYS)
    if unknown:
        raise ContractError(f"SamplingParams.__init__() got unexpected keyword argument(s) {unknown}")
    max_tokens = _int(data, "max_tokens", minimum=1)
    n = _int(data, "n", minimum=1)
    if n not in (None, 1):
        raise ContractError(f"n: only n=1 is simulated (got {n})")
    _int(data, "top_k", minimum=-1)
    _int(data, "min_tokens", minimum=0)
    _number(data, "temperature", 0.0, math.inf)
    top_p = _number(data, "top_p", 0.0, 1.0)
    if top_p == 0.0:
        raise ContractError("top_p must be in (0, 1], got 0.0.")
    return Sampling(
        max_tokens=DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
        seed=_int(data, "seed", minimum=None),
        logprobs=_int(data, "logprobs", minimum=0),
    )


def _int(data: dict[str, Any], key: str, minimum: int | None) -> int | None:
    """An integer field; integer strings ("100") are accepted, as the backend casts them."""
    if key not in data:
        return None
    v = data[key]
    ok = (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
        or (isinstance(v, str) and v.strip().lstrip("-").isdigit())
    )
    want = "an integer" if minimum is None else f"an integer >= {minimum}"
    if not ok or (minimum is not None and int(v) < minimum):
        raise ContractError(f"{key} must be {want}, got {v!r}.")
    return int(v)


def _number(data: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    if key not in data:
        return None
    v = data[key]
    try:
        if isinstance(v, bool):
            raise ValueError
        value = float(v)
    except (TypeError, ValueError):
        raise ContractError(f"{key} must be a number, got {v!r}.") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ContractError(f"{key} must be in [{lo}, {hi}], got {v!r}.")
    return value


@dataclass(frozen=True)
class Piece:
    """What one response carries: its text and token counts."""

    text: str
    num_input_tokens: int
    num_output_tokens: int  # tokens in this response (streaming) or in all (not streaming)
    finish_reason: str | None  # None until the request finished (rendered "None", like vLLM)
    token_words: tuple[str, ...] = ()  # the tokens of this piece, for logprobs


def output_arrays(req: GenerateRequest, piece: Piece) -> dict[str, npt.NDArray[Any]]:
    """The output tensors of one response, as the backend's ``create_response`` builds them."""
    out: dict[str, npt.NDArray[Any]] = {
        "text_output": np.asarray([piece.text.encode("utf-8")], dtype=np.object_),
    }
    if "return_finish_reason" in req.returns:
        out["finish_reason"] = np.asarray([str(piece.finish_reason)], dtype=np.object_)
    if "return_cumulative_logprob" in req.returns:
        out["cumulative_logprob"] = np.asarray([_cumulative_logprob(piece)], dtype=np.float32)
    if "return_logprobs" in req.returns:
        out["logprobs"] = np.asarray([_logprobs_json(req, piece).encode("utf-8")], dtype=np.object_)
    if "return_num_input_tokens" in req.returns:
        out["num_input_tokens"] = np.asarray(piece.num_input_tokens, dtype=np.uint32)
    if "return_num_output_tokens" in req.returns:
        out["num_output_tokens"] = np.asarray([piece.num_output_tokens], dtype=np.uint32)
    return out


_LOGPROB = -0.25  # every simulated token's log-probability (greedy, confident)


def _cumulative_logprob(piece: Piece) -> float:
    return _LOGPROB * piece.num_output_tokens


def _logprobs_json(req: GenerateRequest, piece: Piece) -> str:
    """"null" unless the request asked for ``logprobs`` (as vLLM leaves them None)."""
    if req.sampling.logprobs is None:
        return "null"
    return json.dumps([
        {str(_token_id(w)): {"logprob": _LOGPROB, "rank": 1, "decoded_token": " " + w}}
        for w in piece.token_words
    ])


def _token_id(word: str) -> int:
    return sum(word.encode()) % 32000
