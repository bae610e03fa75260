"""Probes the local supervisor uses: model readiness and one real inference request.

All are synchronous, bounded by their timeout, and return False rather than raise.
``credentials`` (gRPC channel credentials: TLS, with a client certificate for mTLS) and
``metadata`` (an API key header or ``authorization: Bearer ...``) let them reach a
secured Envoy or replica; without them the channel is plaintext and unauthenticated.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import grpc

from caravan.spec import names

PROBE_MAX_TOKENS = 2
PROBE_REQUEST_ID = "caravan-probe"


Metadata = Sequence[tuple[str, str]]


def channel(endpoint: str, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
    """A channel to ``endpoint``: TLS with ``credentials``, else plaintext."""
    if credentials is None:
        return grpc.insecure_channel(endpoint)
    return grpc.secure_channel(endpoint, credentials)


def model_ready(endpoint: str, model: str, timeout_s: float = 0.5,
                credentials: grpc.ChannelCredentials | None = None) -> bool:
    """True when ``endpoint`` answers KServe ``ModelReady`` true for ``model``.

    This, not grpc.health.v1, tells whether a Triton replica can serve: when the vLLM
    backend unloads a model whose engine died, Triton's health answers SERVING again once
    the unload is done (strict readiness ignores unloaded models); ModelReady stays false
    (docs/triton-contract.md). The Nomad job checks the same thing over HTTP."""
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    try:
        with channel(endpoint, credentials) as ch:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
            resp = stub.ModelReady(service_pb2.ModelReadyRequest(name=model), timeout=timeout_s)
            return bool(resp.ready)
    except grpc.RpcError:
        return False


def infer_once(endpoint: str, model: str, timeout_s: float = 5.0,
               model_header: str = names.MODEL_HEADER,
               credentials: grpc.ChannelCredentials | None = None, metadata: Metadata = ()) -> bool:
    """True when one small inference request for ``model`` through ``endpoint`` (Envoy
    or a replica) is answered, the way every Caravan client sends them: one
    ``ModelStreamInfer`` stream carrying one request (``stream`` = false, prompt
    "ping", ``max_tokens`` ``PROBE_MAX_TOKENS``) with the header ``model_header: model``
    (pass the spec's ``envoy.model_header``) plus ``metadata``. Answered means: the stream ends gRPC-OK,
    one of its responses is flagged ``triton_final_response`` and none carries an
    ``error_message``. False otherwise, on any gRPC error, and after ``timeout_s``
    (the deadline of the whole stream)."""
    from caravan.bench.wire import MODEL_STREAM_INFER, decode_stream_response, encode_request

    request = encode_request(model, PROBE_REQUEST_ID, "ping", PROBE_MAX_TOKENS, stream=False,
                             count_tokens=False)
    try:
        with channel(endpoint, credentials) as ch:
            call = ch.stream_stream(MODEL_STREAM_INFER, response_deserializer=decode_stream_response)
            return final_without_error(call(iter((request,)), metadata=((model_header, model), *metadata),
                                            timeout=timeout_s))
    except grpc.RpcError:
        return False


def final_without_error(responses: Iterable[Any]) -> bool:
    """True when the ``ModelStreamInferResponse`` messages of one stream (read to the
    end) include a final one and no ``error_message``."""
    final = False
    for resp in responses:
        if resp.error_message:
            return False
        flag = resp.infer_response.parameters.get("triton_final_response")
        final = final or (flag is not None and bool(flag.bool_param))
    return final
