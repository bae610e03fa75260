"""The Triton vLLM backend's request/response contract, as pure functions over numpy.

Source: triton-inference-server/vllm_backend ``src/model.py``
(``TritonPythonModel._auto_complete_inputs_and_outputs``, ``_verify_loras``,
``_validate_request_task_name``), ``src/utils/request.py``
(``GenerateRequest._get_input_tensors``, ``GenerateRequest.execute``,
``GenerateRequest.create_response``), ``src/utils/vllm_backend_utils.py``
(``TritonSamplingParams.from_dict``) and vLLM ``vllm/sampling_params.py``
(``SamplingParams.__post_init__``, ``_verify_args``). docs/triton-contract.md gives the
behaviour IDs (C18-C30). Triton's core already refuses requests whose tensors do not
match the config, so this module only does what the backend itself does, in its order:

* In ``execute()`` (``sampling_text`` + ``verify_loras``): the sampling-parameters text
  is ``json.loads``-ed and its ``lora_name`` popped. Text that is not JSON, or JSON that
  is not an object, raises right there (``JSONDecodeError``, ``AttributeError``,
  ``TypeError``): the model lets it escape ``execute()`` so that Triton answers "Failed
  to process the request(s) ..." (C26a, C17). A ``lora_name`` gets "LoRA feature is not
  enabled." (C30; the simulated engine has no LoRA).
* Per request (``parse_request``, raising ``ContractError``, reported by the model as
  "Error generating stream: <message>", C27): ``embedding_request`` is refused on a
  generative model (C30); ``text_input`` is decoded as UTF-8; each ``image`` element is
  base64-decoded (leniently, as ``base64.b64decode``) and opened with PIL (C29);
  ``stream`` absent means false; ``exclude_input_in_output`` false with ``stream``
  true is an error (C23); then the sampling parameters are built as ``from_dict`` does
  (C24): values converted by their ``SamplingParams`` annotation, then vLLM's checks.
  Any failure there makes ``from_dict`` return None and the backend then fails on
  ``sampling_params.lora_name``: the client sees "'NoneType' object has no attribute
  'lora_name'" (C26b); ``SamplingParamsError.detail`` keeps the real reason for the log.
* ``max_tokens`` defaults to 16 (vLLM's ``SamplingParams`` default, C25).

Outputs (``output_arrays``, C28) are built as numpy arrays with the backend's dtypes:
BYTES as ``np.object_``, ``cumulative_logprob`` float32 (NaN unless the ``logprobs``
sampling parameter is set, as vLLM V1 reports None), ``num_input_tokens`` a 0-d uint32
(the backend's ``np.asarray(n, dtype=np.uint32)``), ``num_output_tokens`` uint32 [1].

Simulator limits (not vLLM's): ``n`` must be 1; stop strings, penalties and the other
sampling knobs are validated but do not change the synthetic text.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
import numpy.typing as npt

from caravan.errors import CaravanError
from caravan.simulator.textgen import VOCAB

DEFAULT_MAX_TOKENS = 16  # vllm.SamplingParams.max_tokens default
ERROR_PREFIX = "Error generating stream: "
ERROR_TEXT_OUTPUT = "N/A"
LORA_NOT_ENABLED = "LoRA feature is not enabled."
# What the backend answers for any bad sampling parameter (C26b): from_dict returned None.
SAMPLING_PARAMS_NONE = "'NoneType' object has no attribute 'lora_name'"
SAMPLING_LOG_PREFIX = "[vllm] Was trying to create `TritonSamplingParams`, but got exception: "

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

# vLLM SamplingParams fields by annotation: from_dict converts the first four kinds with
# int / float / bool / int (``int | None`` is ``Optional[int]``: int(None) fails).
_INT_KEYS = frozenset(("n", "top_k", "min_tokens", "output_text_buffer_length", "routed_experts_prompt_start"))
_FLOAT_KEYS = frozenset((
    "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p", "min_p",
))
_BOOL_KEYS = frozenset((
    "ignore_eos", "flat_logprobs", "detokenize", "skip_special_tokens", "spaces_between_special_tokens",
    "include_stop_str_in_output", "skip_clone",
))
_OPTIONAL_INT_KEYS = frozenset((
    "seed", "max_tokens", "logprobs", "prompt_logprobs", "prompt_logprob_start", "stream_interval",
    "thinking_token_budget", "_eos_token_id",
))
_OTHER_KEYS = frozenset((
    "stop", "stop_token_ids", "prompt_logprob_token_ids", "logprob_token_ids", "output_kind",
    "_all_stop_token_ids", "structured_outputs", "logit_bias", "allowed_token_ids", "extra_args",
    "bad_words", "_bad_words_token_ids", "skip_reading_prefix_cache", "repetition_detection",
    "trace_decode_token_ids",
    "lora_name",  # TritonSamplingParams' own field
))
KNOWN_SAMPLING_KEYS = _INT_KEYS | _FLOAT_KEYS | _BOOL_KEYS | _OPTIONAL_INT_KEYS | _OTHER_KEYS
_CONVERT: dict[str, type] = {
    **dict.fromkeys(_INT_KEYS | _OPTIONAL_INT_KEYS, int),
    **dict.fromkeys(_FLOAT_KEYS, float),
    **dict.fromkeys(_BOOL_KEYS, bool),
}
_STRUCTURED_CONSTRAINTS = ("json", "regex", "choice", "grammar", "json_object", "structural_tag")
_STRUCTURED_KEYS = frozenset((
    *_STRUCTURED_CONSTRAINTS, "disable_any_whitespace", "disable_additional_properties", "whitespace_pattern",
))
_MAX_N = 16384  # VLLM_MAX_N_SEQUENCES default
_SAMPLING_EPS = 1e-5

Arrays = Mapping[str, npt.NDArray[Any]]


class ContractError(CaravanError, ValueError):
    """The backend would fail this request in-stream; ``str(err)`` is the message after
    "Error generating stream: "."""


class SamplingParamsError(ContractError):
    """``from_dict`` would fail: the client sees ``SAMPLING_PARAMS_NONE``; ``detail`` is
    the exception the backend logs."""

    def __init__(self, detail: str) -> None:
        super().__init__(SAMPLING_PARAMS_NONE)
        self.detail = detail


@dataclass(frozen=True)
class Sampling:
    """The sampling parameters the simulator uses (validated)."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    seed: int | None = None
    logprobs: int | None = None  # None: no logprobs; -1: the whole vocabulary


@dataclass(frozen=True)
class GenerateRequest:
    """One validated generation request."""

    prompt: str
    images: int
    stream: bool
    prepend_input: bool
    sampling: Sampling
    returns: frozenset[str] = frozenset()


def sampling_text(inputs: Arrays, request_parameters: str) -> str:
    """The sampling parameters' JSON text: the ``sampling_parameters`` tensor's first
    element (UTF-8, UnicodeDecodeError otherwise) when given, else the request's own
    parameters as Triton serialized them (C24)."""
    arr = inputs.get("sampling_parameters")
    if arr is None:
        return request_parameters
    value = arr.reshape(-1)[0]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def verify_loras(text: str) -> str | None:
    """The backend's ``_verify_loras``, run in ``execute()``: None when the request may
    proceed, else the message of its one final error (C30). Raises whatever
    ``json.loads(text).pop("lora_name", None)`` raises (C26a): the model lets it escape."""
    lora_name = json.loads(text).pop("lora_name", None)
    return LORA_NOT_ENABLED if lora_name is not None else None


def parse_request(inputs: Arrays, parameters_json: str, model: str) -> GenerateRequest:
    """Read a request the way the vLLM backend's ``_infer`` does (after ``execute()``
    accepted it). Raises ContractError (SamplingParamsError for C26b)."""
    if "embedding_request" in inputs:
        raise ContractError(f"Model {model} does not support 'embed' request")
    if "text_input" not in inputs:  # core lets it through when other inputs make the count (C15)
        raise ContractError("'NoneType' object has no attribute 'as_numpy'")
    prompt = _text(inputs["text_input"])
    images = _count_images(inputs.get("image"))
    stream = _flag(inputs, "stream")
    exclude = inputs.get("exclude_input_in_output")
    prepend = not bool(exclude.reshape(-1)[0]) if exclude is not None else not stream
    if prepend and stream:
        raise ContractError("When streaming, `exclude_input_in_output` = False is not allowed.")
    returns = frozenset(name for name in RETURN_FLAGS if _flag(inputs, name))
    return GenerateRequest(
        prompt=prompt,
        images=images,
        stream=stream,
        prepend_input=prepend,
        sampling=parse_sampling(sampling_text(inputs, parameters_json)),
        returns=returns,
    )


def _flag(inputs: Arrays, name: str) -> bool:
    arr = inputs.get(name)
    return bool(arr.reshape(-1)[0]) if arr is not None and arr.size else False


def _text(arr: npt.NDArray[Any]) -> str:
    value = arr.reshape(-1)[0]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ContractError(str(exc)) from None
    return str(value)


def _count_images(arr: npt.NDArray[Any] | None) -> int:
    """Decode each element as the backend does (``base64.b64decode`` without validation,
    then PIL to RGB); the message is the exception's, as the backend reports it."""
    if arr is None:
        return 0
    from PIL import Image  # only for requests with images

    for item in arr.reshape(-1):
        try:
            data = base64.b64decode(item.decode("utf-8") if isinstance(item, bytes) else str(item))
            with Image.open(BytesIO(data)) as image:
                image.convert("RGB")
        except Exception as exc:
            raise ContractError(str(exc)) from None
    return int(arr.size)


def parse_sampling(text: str) -> Sampling:
    """``TritonSamplingParams.from_dict(text)`` and vLLM's checks, for the simulator.
    Raises SamplingParamsError where ``from_dict`` would return None, ContractError for
    what the simulator cannot do (``n`` > 1)."""
    try:
        params = _from_dict(text)
    except Exception as exc:
        raise SamplingParamsError(str(exc) or type(exc).__name__) from None
    if params["n"] != 1:
        raise ContractError(f"n={params['n']}: the simulated engine generates one sequence per request (n must be 1)")
    return Sampling(max_tokens=params["max_tokens"], seed=params["seed"], logprobs=params["logprobs"])


def _from_dict(text: str) -> dict[str, Any]:
    """The converted parameters, with vLLM's defaults for what the simulator reads.
    Raises as ``from_dict`` + ``SamplingParams(**params)`` would."""
    data = json.loads(text)
    for key, value in data.items():
        if key == "structured_outputs":
            _structured_outputs(json.loads(value))
        elif key in _CONVERT:
            data[key] = _CONVERT[key](value)
    unknown = [k for k in data if k not in KNOWN_SAMPLING_KEYS]
    if unknown:
        raise TypeError(f"Unexpected keyword argument {unknown[0]!r}")
    p: dict[str, Any] = {
        "n": 1, "presence_penalty": 0.0, "frequency_penalty": 0.0, "repetition_penalty": 1.0,
        "temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "seed": None, "stop": None,
        "stop_token_ids": None, "bad_words": None, "max_tokens": DEFAULT_MAX_TOKENS, "min_tokens": 0,
        "logprobs": None, "prompt_logprobs": None, "detokenize": True, "include_stop_str_in_output": False,
        "stream_interval": None, "thinking_token_budget": None,
    } | data
    _post_init(p)
    return p


def _structured_outputs(value: Any) -> None:
    """``StructuredOutputsParams(**value)``: known keys, exactly one constraint."""
    if not isinstance(value, dict):
        raise TypeError(f"StructuredOutputsParams() argument after ** must be a mapping, not {type(value).__name__}")
    unknown = [k for k in value if k not in _STRUCTURED_KEYS]
    if unknown:
        raise TypeError(f"StructuredOutputsParams.__init__() got an unexpected keyword argument {unknown[0]!r}")
    count = sum(value.get(k) is not None for k in _STRUCTURED_CONSTRAINTS)
    if count != 1:
        raise ValueError(f"You must use exactly one kind of structured outputs constraint, got {count}")


def _post_init(p: dict[str, Any]) -> None:
    """vLLM ``SamplingParams.__post_init__`` and ``_verify_args`` (the parts that can
    fail), in their order, on ``p`` (modified in place as vLLM does)."""
    if p["seed"] == -1:
        p["seed"] = None
    budget = p["thinking_token_budget"]
    if budget is not None and budget != -1 and budget < 0:
        raise ValueError("`thinking_token_budget` must be a non-negative integer or -1 for unlimited.")
    if p["stop"] is None:
        p["stop"] = []
    elif isinstance(p["stop"], str):
        p["stop"] = [p["stop"]]
    for key in ("stop_token_ids", "bad_words"):
        p[key] = [] if p[key] is None else list(dict.fromkeys(p[key]))
    if p["stop"] and not p["include_stop_str_in_output"]:
        max(len(s) for s in p["stop"])  # TypeError for non-strings, as vLLM
    _verify_args(p)
    if p["temperature"] < _SAMPLING_EPS and p["n"] > 1:
        raise ValueError(f"n must be 1 when using greedy sampling, got {p['n']}.")


def _verify_args(p: dict[str, Any]) -> None:
    n = p["n"]
    if n < 1 or n > _MAX_N:
        raise ValueError(f"n must be in [1, {_MAX_N}], got {n}.")
    checks: tuple[tuple[bool, str], ...] = (
        (not -2.0 <= p["presence_penalty"] <= 2.0, "presence_penalty must be in [-2, 2]"),
        (not -2.0 <= p["frequency_penalty"] <= 2.0, "frequency_penalty must be in [-2, 2]"),
        (not math.isfinite(p["repetition_penalty"]) or p["repetition_penalty"] <= 0.0,
         "repetition_penalty must be a finite number greater than zero"),
        (not math.isfinite(p["temperature"]) or not 0.0 <= p["temperature"] <= 2.0,
         "temperature must be in [0, 2]"),
        (not 0.0 < p["top_p"] <= 1.0, "top_p must be in (0, 1]"),
        (p["top_k"] < -1, "top_k must be 0 (disable), or at least 1"),
        (not 0.0 <= p["min_p"] <= 1.0, "min_p must be in [0, 1]"),
        (p["max_tokens"] is not None and p["max_tokens"] < 1, "max_tokens must be at least 1"),
        (p["min_tokens"] < 0, "min_tokens must be greater than or equal to 0"),
        (p["max_tokens"] is not None and p["min_tokens"] > p["max_tokens"],
         "min_tokens must be less than or equal to max_tokens"),
        (p["stream_interval"] is not None and p["stream_interval"] < 1, "stream_interval must be at least 1"),
        (p["logprobs"] is not None and p["logprobs"] != -1 and p["logprobs"] < 0,
         "logprobs must be non-negative or -1"),
        (p["prompt_logprobs"] is not None and p["prompt_logprobs"] != -1 and p["prompt_logprobs"] < 0,
         "prompt_logprobs must be non-negative or -1"),
        (not all(isinstance(t, int) for t in p["stop_token_ids"]), "stop_token_ids must contain only integers"),
        (not isinstance(p["stop"], list), "stop must be a string or a list of strings"),
    )
    for failed, message in checks:
        if failed:
            raise ValueError(message)
    if any(not s for s in p["stop"]):
        raise ValueError("stop cannot contain an empty string.")
    if p["stop"] and not p["detokenize"]:
        raise ValueError("stop strings are only supported when detokenize is True.")
    if any(not w for w in p["bad_words"]):
        raise ValueError("bad_words cannot contain an empty string.")


@dataclass(frozen=True)
class Piece:
    """What one response carries: its text and token counts."""

    text: str
    num_input_tokens: int
    num_output_tokens: int  # tokens in this response (streaming) or in all (not streaming)
    finish_reason: str | None  # None until the request finished (rendered "None", like vLLM)
    token_words: tuple[str, ...] = ()  # the tokens of this piece, for logprobs
    total_output_tokens: int = 0  # tokens generated so far (for the cumulative logprob)
    final: bool = False  # the request's last response (TRITONSERVER_RESPONSE_COMPLETE_FINAL)


def output_arrays(req: GenerateRequest, piece: Piece) -> dict[str, npt.NDArray[Any]]:
    """The output tensors of one response, as the backend's ``create_response`` builds them."""
    out: dict[str, npt.NDArray[Any]] = {
        "text_output": np.asarray([piece.text.encode("utf-8")], dtype=np.object_),
    }
    if "return_finish_reason" in req.returns:
        out["finish_reason"] = np.asarray([str(piece.finish_reason)], dtype=np.object_)
    if "return_cumulative_logprob" in req.returns:
        out["cumulative_logprob"] = np.asarray([_cumulative_logprob(req, piece)], dtype=np.float32)
    if "return_logprobs" in req.returns:
        out["logprobs"] = np.asarray([_logprobs_json(req, piece).encode("utf-8")], dtype=np.object_)
    if "return_num_input_tokens" in req.returns:
        out["num_input_tokens"] = np.asarray(piece.num_input_tokens, dtype=np.uint32)
    if "return_num_output_tokens" in req.returns:
        out["num_output_tokens"] = np.asarray([piece.num_output_tokens], dtype=np.uint32)
    return out


_LOGPROB = -0.25  # every simulated token's log-probability (greedy, confident)
_TOKEN_IDS = {word: i for i, word in enumerate(VOCAB)}


def _cumulative_logprob(req: GenerateRequest, piece: Piece) -> float:
    """The sequence's cumulative logprob so far; NaN without the ``logprobs`` sampling
    parameter (vLLM V1 reports None, which ``np.asarray(..., float32)`` turns into NaN)."""
    if req.sampling.logprobs is None:
        return math.nan
    return _LOGPROB * piece.total_output_tokens


def _logprobs_json(req: GenerateRequest, piece: Piece) -> str:
    """"null" unless the request asked for ``logprobs`` (as vLLM leaves them None); else
    one ``{token_id: {logprob, rank, decoded_token}}`` per token of this piece: the
    sampled token (rank 1) and the next most likely ones, ``logprobs`` entries in all
    (at least 1; -1 = the whole simulated vocabulary)."""
    k = req.sampling.logprobs
    if k is None:
        return "null"
    width = len(VOCAB) if k == -1 else min(max(k, 1), len(VOCAB))
    entries = []
    for word in piece.token_words:
        sampled = _TOKEN_IDS.get(word, 0)
        entry = {str(sampled): {"logprob": _LOGPROB, "rank": 1, "decoded_token": " " + word}}
        rank = 2
        for offset in range(1, len(VOCAB)):
            if rank > width:
                break
            other = (sampled + offset) % len(VOCAB)
            entry[str(other)] = {"logprob": _LOGPROB - rank, "rank": rank, "decoded_token": " " + VOCAB[other]}
            rank += 1
        entries.append(entry)
    return json.dumps(entries)
