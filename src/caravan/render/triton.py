"""Triton model repository for the vLLM backend, from the spec. Pure.

Per model: ``triton_models/<model>/config.pbtxt`` (``backend: "vllm"``, decoupled
transaction policy, ``max_batch_size: 0``, one ``KIND_MODEL`` instance that owns
all tensor-parallel GPUs, ``REPORT_CUSTOM_METRICS`` for the vllm: metrics,
``REPORT_PREFIX_CACHE_METRICS`` (read by Caravan's simulated model; the stock backend ignores it),
``ENABLE_VLLM_HEALTH_CHECK``) and ``triton_models/<model>/1/model.json`` (vLLM engine
args). The tensors listed are the vLLM backend's contract; clients use them through
``tritonclient``. The same texts are embedded in the Nomad job (``template`` blocks).

``ENABLE_VLLM_HEALTH_CHECK``: before each batch of requests the vLLM backend asks the
engine ``check_health()``; if the engine is dead it fails those requests (UNAVAILABLE)
and calls ``pb_utils.unload_model`` on itself (vllm_backend ``src/model.py``
``_check_health``, ``docs/health_check.md``). The unload only happens when tritonserver
runs with ``--model-control-mode=explicit``, which the Nomad job sets
(``caravan.nomad.triton_job``); the model then leaves the READY state, the job's
model-ready check (``/v2/models/<model>/ready``) goes critical and Nomad restarts the
task. (Triton's ``grpc.health.v1`` is server readiness, SERVING again once the unload
is done: it does not see this.)
"""

from __future__ import annotations

import json

from caravan.spec import ModelSpec, PlatformSpec
from caravan.triton import contract

REPOSITORY = "triton_models"
# tritonserver flags every replica runs with (Nomad job and local launcher): Envoy sends an
# HTTP/2 PING on each replica connection every ~2 s (caravan.xds.resilience keepalive);
# with gRPC's defaults (a ping at most every 5 min, none while no call is open) tritonserver
# would count those as abuse and close an idle connection with GOAWAY too_many_pings.
KEEPALIVE_ARGS = ("--grpc-keepalive-permit-without-calls=1",
                  "--grpc-http2-min-recv-ping-interval-without-data=1000")

# The tensors the rendered config lists (the backend auto-completes the rest), with their
# types from the one statement of the vLLM backend's contract, caravan.triton.contract.
_LISTED_INPUTS = ("text_input", "image", "stream", "sampling_parameters", "exclude_input_in_output",
                  "return_finish_reason", "return_num_input_tokens", "return_num_output_tokens")
_LISTED_OUTPUTS = ("text_output", "finish_reason", "num_input_tokens", "num_output_tokens")


def _dims(dims: tuple[int, ...]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


_IN = {name: (dtype, dims, optional) for name, dtype, dims, optional in contract.INPUTS}
_OUT = {name: (dtype, dims) for name, dtype, dims in contract.OUTPUTS}
# (name, data type, dims, optional) -- the vLLM backend's inputs and outputs.
INPUTS: tuple[tuple[str, str, str, bool], ...] = tuple(
    (n, _IN[n][0], _dims(_IN[n][1]), _IN[n][2]) for n in _LISTED_INPUTS)
OUTPUTS: tuple[tuple[str, str, str], ...] = tuple(
    (n, _OUT[n][0], _dims(_OUT[n][1])) for n in _LISTED_OUTPUTS)


def render(spec: PlatformSpec) -> dict[str, str]:
    """``triton_models/...`` relative path -> text, for every model."""
    files: dict[str, str] = {}
    for m in spec.models:
        files[f"{REPOSITORY}/{m.name}/config.pbtxt"] = config_pbtxt(m)
        files[f"{REPOSITORY}/{m.name}/1/model.json"] = model_json(m)
    return files


def model_json(m: ModelSpec) -> str:
    """vLLM engine arguments (``AsyncEngineArgs`` field names), pretty JSON."""
    e = m.engine
    args = {
        "model": e.model,
        "tensor_parallel_size": e.tensor_parallel_size,
        "gpu_memory_utilization": e.gpu_memory_utilization,
        "max_model_len": e.max_model_len,
        "max_num_seqs": e.max_num_seqs,
        "max_num_batched_tokens": e.max_num_batched_tokens,
        "dtype": e.dtype,
        "enable_prefix_caching": e.enable_prefix_caching,
    }
    return json.dumps(args, indent=2) + "\n"


def config_pbtxt(m: ModelSpec) -> str:
    """Triton model configuration (protobuf text format)."""
    inputs = ",\n".join(_tensor(n, t, d, opt) for n, t, d, opt in INPUTS)
    outputs = ",\n".join(_tensor(n, t, d, False) for n, t, d in OUTPUTS)
    return (
        f"# Triton + vLLM backend config for {m.name} (rendered by caravan; edit the spec).\n"
        f'name: "{m.name}"\n'
        'backend: "vllm"\n'
        "max_batch_size: 0\n\n"
        "# vLLM batches continuously itself; Triton streams each response as it comes.\n"
        "model_transaction_policy {\n  decoupled: true\n}\n\n"
        "# One instance owning all tensor-parallel GPUs of the replica.\n"
        "instance_group [\n  {\n    count: 1\n    kind: KIND_MODEL\n  }\n]\n\n"
        "parameters {\n"
        '  key: "REPORT_CUSTOM_METRICS"\n'
        '  value: { string_value: "true" }\n'
        "}\n\n"
        "# Caravan addition: vLLM's prefix-cache queries/hits pair (docs/triton-contract.md C37).\n"
        "parameters {\n"
        '  key: "REPORT_PREFIX_CACHE_METRICS"\n'
        '  value: { string_value: "true" }\n'
        "}\n\n"
        "# A dead vLLM engine unloads the model (needs --model-control-mode=explicit): the\n"
        "# Nomad job's model-ready check then fails and Nomad restarts the replica.\n"
        "parameters {\n"
        '  key: "ENABLE_VLLM_HEALTH_CHECK"\n'
        '  value: { string_value: "true" }\n'
        "}\n\n"
        f"input [\n{inputs}\n]\n\n"
        f"output [\n{outputs}\n]\n"
    )


def _tensor(name: str, dtype: str, dims: str, optional: bool) -> str:
    lines = [f'    name: "{name}"', f"    data_type: {dtype}", f"    dims: {dims}"]
    if optional:
        lines.append("    optional: true")
    return "  {\n" + "\n".join(lines) + "\n  }"
