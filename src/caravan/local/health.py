"""Probes the local supervisor uses: gRPC health and one real inference request.

Both are synchronous, bounded by their timeout, and return False rather than raise.
"""

from __future__ import annotations

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc


def grpc_serving(endpoint: str, timeout_s: float = 0.5) -> bool:
    """True when ``endpoint``'s grpc.health.v1 Check answers SERVING."""
    try:
        with grpc.insecure_channel(endpoint) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
            return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def infer_once(endpoint: str, model: str, timeout_s: float = 5.0, model_header: str = "x-model") -> bool:
    """True when one small unary ModelInfer for ``model`` through ``endpoint`` succeeds."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url=endpoint)
    try:
        text = grpcclient.InferInput("text_input", [1], "BYTES")
        text.set_data_from_numpy(np.array([b"ping"], dtype=np.object_))
        params = grpcclient.InferInput("sampling_parameters", [1], "BYTES")
        params.set_data_from_numpy(np.array([b'{"max_tokens": 2}'], dtype=np.object_))
        client.infer(model, [text, params], headers={model_header: model}, client_timeout=timeout_s)
        return True
    except InferenceServerException:
        return False
    finally:
        client.close()
