"""Response building, checked by decoding with tritonclient's own InferResult."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import InferResult
from tritonclient.grpc import model_config_pb2 as mc

from caravan.replica.contract import INPUTS, OUTPUTS, model_config, model_metadata
from caravan.replica.request import GenerateRequest, Sampling
from caravan.replica.responses import Chunk, infer_response, stream_error


def gen(**kw: object) -> GenerateRequest:
    base: dict[str, object] = {
        "request_id": "q1",
        "prompt": "hi",
        "stream": True,
        "prepend_input": False,
        "sampling": Sampling(),
    }
    base.update(kw)
    return GenerateRequest(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("final", [None, False, True], ids=["unary", "chunk", "last"])
def test_text_output_and_parameters(final: bool | None) -> None:
    resp = infer_response("llama", "llama-1", gen(), Chunk(" a b", 1, 2, None), final)
    result = InferResult(resp)
    assert result.as_numpy("text_output").tolist() == [b" a b"]
    assert resp.id == "q1" and resp.model_name == "llama" and resp.model_version == "1"
    assert resp.parameters["caravan_replica_id"].string_param == "llama-1"
    if final is None:
        assert "triton_final_response" not in resp.parameters
    else:
        assert resp.parameters["triton_final_response"].bool_param is final


def test_optional_outputs_are_typed_like_triton() -> None:
    g = gen(return_finish_reason=True, return_num_input_tokens=True, return_num_output_tokens=True)
    result = InferResult(infer_response("m", "r", g, Chunk("x", 12, 3, "length"), True))
    assert result.as_numpy("finish_reason").tolist() == [b"length"]
    assert result.as_numpy("num_input_tokens").dtype == np.uint32
    assert result.as_numpy("num_input_tokens").tolist() == [12]
    assert result.as_numpy("num_output_tokens").tolist() == [3]
    unfinished = InferResult(infer_response("m", "r", g, Chunk("x", 12, 3, None), False))
    assert unfinished.as_numpy("finish_reason").tolist() == [b"None"]


def test_requested_outputs_filter_what_is_sent() -> None:
    g = gen(return_finish_reason=True, requested_outputs=frozenset({"finish_reason"}))
    resp = infer_response("m", "r", g, Chunk("x", 1, 1, "stop"), True)
    assert [o.name for o in resp.outputs] == ["finish_reason"]


def test_stream_error_names_the_request() -> None:
    resp = stream_error("m", "r", "q9", "boom")
    assert resp.error_message == "boom"
    assert resp.infer_response.id == "q9"
    assert resp.infer_response.parameters["triton_final_response"].bool_param is True


def test_model_config_is_a_decoupled_vllm_model() -> None:
    cfg = model_config("llama", 64).config
    assert (cfg.backend, cfg.max_batch_size, cfg.model_transaction_policy.decoupled) == (
        "vllm",
        0,
        True,
    )
    assert [i.name for i in cfg.input] == [t.name for t in INPUTS]
    text_input = cfg.input[0]
    assert (text_input.data_type, list(text_input.dims), text_input.optional) == (
        mc.TYPE_STRING,
        [1],
        False,
    )
    assert [o.name for o in cfg.output] == [t.name for t in OUTPUTS]
    assert cfg.parameters["REPORT_CUSTOM_METRICS"].string_value == "true"


def test_model_metadata_lists_tensors_with_kserve_datatypes() -> None:
    md = model_metadata("llama")
    assert (md.name, list(md.versions), md.platform) == ("llama", ["1"], "vllm")
    assert {t.name: t.datatype for t in md.outputs}["num_input_tokens"] == "UINT32"
    assert {t.name: t.datatype for t in md.inputs}["text_input"] == "BYTES"
