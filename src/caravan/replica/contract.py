"""The Triton vLLM backend's tensor contract, and the metadata/config messages built
from it (pure protobuf construction; no gRPC server code).

Mirrors what Triton's vLLM backend auto-completes into ``config.pbtxt``:
``backend: "vllm"``, ``max_batch_size: 0``, ``model_transaction_policy { decoupled: true }``,
input ``text_input`` (TYPE_STRING [1]) and optional ``stream``, ``sampling_parameters``,
``exclude_input_in_output``, ``return_finish_reason``, ``return_num_input_tokens``,
``return_num_output_tokens``; outputs ``text_output``, ``finish_reason`` (TYPE_STRING
[-1]), ``num_input_tokens`` (TYPE_UINT32 [1]), ``num_output_tokens`` (TYPE_UINT32 [-1]).
Only version "1" of the model exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb

MODEL_VERSION = "1"
SERVER_NAME = "triton"
SERVER_VERSION = "2.54.0"
SERVER_EXTENSIONS = (
    "classification",
    "sequence",
    "model_repository",
    "schedule_policy",
    "model_configuration",
    "system_shared_memory",
    "binary_tensor_data",
    "parameters",
    "statistics",
    "trace",
    "logging",
)


@dataclass(frozen=True)
class TensorSpec:
    """One tensor: KServe datatype ("BYTES", "BOOL", "UINT32"), dims, optional."""

    name: str
    datatype: str
    dims: tuple[int, ...]
    optional: bool = True

    @property
    def config_type(self) -> str:
        """Triton's model-config spelling (BYTES -> TYPE_STRING)."""
        return "TYPE_STRING" if self.datatype == "BYTES" else f"TYPE_{self.datatype}"


INPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("text_input", "BYTES", (1,), optional=False),
    TensorSpec("stream", "BOOL", (1,)),
    TensorSpec("sampling_parameters", "BYTES", (1,)),
    TensorSpec("exclude_input_in_output", "BOOL", (1,)),
    TensorSpec("return_finish_reason", "BOOL", (1,)),
    TensorSpec("return_num_input_tokens", "BOOL", (1,)),
    TensorSpec("return_num_output_tokens", "BOOL", (1,)),
)
OUTPUTS: tuple[TensorSpec, ...] = (
    TensorSpec("text_output", "BYTES", (-1,)),
    TensorSpec("finish_reason", "BYTES", (-1,)),
    TensorSpec("num_input_tokens", "UINT32", (1,)),
    TensorSpec("num_output_tokens", "UINT32", (-1,)),
)
INPUTS_BY_NAME = {t.name: t for t in INPUTS}


def model_config(model: str, max_num_seqs: int) -> pb.ModelConfigResponse:
    """ModelConfig as Triton reports it for a vLLM-backend model."""
    cfg = mc.ModelConfig(
        name=model,
        backend="vllm",
        max_batch_size=0,
        model_transaction_policy=mc.ModelTransactionPolicy(decoupled=True),
        instance_group=[
            mc.ModelInstanceGroup(name=f"{model}_0", count=1, kind=mc.ModelInstanceGroup.KIND_MODEL)
        ],
    )
    for t in INPUTS:
        cfg.input.append(
            mc.ModelInput(
                name=t.name,
                data_type=mc.DataType.Value(t.config_type),
                dims=list(t.dims),
                optional=t.optional,
            )
        )
    for t in OUTPUTS:
        cfg.output.append(
            mc.ModelOutput(
                name=t.name, data_type=mc.DataType.Value(t.config_type), dims=list(t.dims)
            )
        )
    cfg.parameters["REPORT_CUSTOM_METRICS"].string_value = "true"
    cfg.parameters["max_num_seqs"].string_value = str(max_num_seqs)
    return pb.ModelConfigResponse(config=cfg)


def model_metadata(model: str) -> pb.ModelMetadataResponse:
    """ModelMetadata: name, versions ["1"], platform "vllm", tensor shapes."""
    return pb.ModelMetadataResponse(
        name=model,
        versions=[MODEL_VERSION],
        platform="vllm",
        inputs=[
            pb.ModelMetadataResponse.TensorMetadata(
                name=t.name, datatype=t.datatype, shape=list(t.dims)
            )
            for t in INPUTS
        ],
        outputs=[
            pb.ModelMetadataResponse.TensorMetadata(
                name=t.name, datatype=t.datatype, shape=list(t.dims)
            )
            for t in OUTPUTS
        ],
    )


def server_metadata() -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(
        name=SERVER_NAME, version=SERVER_VERSION, extensions=list(SERVER_EXTENSIONS)
    )
