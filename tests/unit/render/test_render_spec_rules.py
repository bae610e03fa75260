"""Impossible deploy specs are rejected with the field's path."""

from __future__ import annotations

from typing import Any

import pytest

from caravan.spec import SpecError, image_tag_problem, parse_spec


def _spec(**overrides: Any) -> dict[str, Any]:
    model = {"name": "a", "engine": {"model": "m"}}
    model.update(overrides.pop("model", {}))
    return {"models": [model], **overrides}


@pytest.mark.parametrize(
    ("data", "error"),
    [(_spec(model={"engine": {"model": "m", "tensor_parallel_size": 4}},
            nomad={"gpus_per_node": 2}),
      "models[0].engine.tensor_parallel_size: 4 GPUs needed on one node, "
      "but nomad.gpus_per_node is 2"),
     (_spec(model={"engine": {"model": "m", "tensor_parallel_size": 2},
                   "resources": {"gpus": 1}}),
      "models[0].resources.gpus: 1 is less than engine.tensor_parallel_size (2)"),
     (_spec(model={"resources": {"gpus": 9}}),
      "models[0].resources.gpus: 9 is more than nomad.gpus_per_node (8)"),
     (_spec(nomad={"triton_image": "nvcr.io/nvidia/tritonserver"}),
      "nomad.triton_image: 'nvcr.io/nvidia/tritonserver' has no tag: pin a version, "
      "e.g. nvcr.io/nvidia/tritonserver:<version>"),
     (_spec(nomad={"caravan_image": "registry:5000/caravan"}),
      "nomad.caravan_image: 'registry:5000/caravan' has no tag"),
     (_spec(model={"replicas": {"min": 3, "max": 2}}),
      "models[0].replicas.max: must be >= min (3)"),
     ({"models": [{"name": "a", "engine": {"model": "m"}},
                  {"name": "a", "engine": {"model": "n"}}]},
      "models[1].name: duplicate model name 'a' (also models[0])")],
    ids=["tp-over-node", "gpus-under-tp", "gpus-over-node", "image-no-tag",
         "registry-port-no-tag", "max-below-min", "duplicate-names"],
)
def test_impossible_specs_name_the_field(data: dict[str, Any], error: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    assert any(e.startswith(error) for e in info.value.errors), info.value.errors


@pytest.mark.parametrize(
    ("ref", "ok"),
    [("nvcr.io/nvidia/tritonserver:25.01-vllm-python-py3", True),
     ("caravan:0.1.0", True),
     ("localhost:5000/caravan:1", True),
     ("envoyproxy/envoy@sha256:" + "a" * 64, True),
     ("envoyproxy/envoy", False),
     ("envoyproxy/envoy:", False),
     ("envoyproxy/envoy@md5:abc", False)],
    ids=["triton", "short", "registry-port", "digest", "no-tag", "empty-tag", "bad-digest"],
)
def test_image_tag_problem(ref: str, ok: bool) -> None:
    assert (image_tag_problem(ref) is None) is ok
