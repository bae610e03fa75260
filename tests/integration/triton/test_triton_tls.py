"""C3: gRPC over TLS with client certificates (``ServerTls`` with a client CA, i.e.
``--grpc-use-ssl-mutual=true``): inference and grpc.health.v1 share the TLS port,
a client without a certificate or without TLS is refused, and the metrics port stays
plain HTTP. One replica with certificates from a throwaway CA."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from triton_conformance import MODEL, Pki, Replica, decode, infer_request, make_pki, running_replica, scrape
from tritonclient.grpc import service_pb2, service_pb2_grpc

from caravan.triton.launcher import ReplicaOptions, ServerTls

pytestmark = pytest.mark.integration


def _credentials(pki: Pki, client_cert: bool) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=pki.client_key.read_bytes() if client_cert else None,
        certificate_chain=pki.client_cert.read_bytes() if client_cert else None)


def _model_ready(endpoint: str, credentials: grpc.ChannelCredentials | None) -> bool | grpc.RpcError:
    channel = (grpc.secure_channel(endpoint, credentials) if credentials is not None
               else grpc.insecure_channel(endpoint))
    with channel:
        try:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            return bool(stub.ModelReady(service_pb2.ModelReadyRequest(name=MODEL), timeout=3).ready)
        except grpc.RpcError as exc:
            return exc


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Replica, Pki]]:
    root = tmp_path_factory.mktemp("tls")
    pki = make_pki(root / "pki")
    options = ReplicaOptions(time_scale=0.05, tls=ServerTls(pki.server_cert, pki.server_key, pki.ca))
    creds = _credentials(pki, client_cert=True)
    with running_replica(root / "replica", options, ready=lambda ep, _: _model_ready(ep, creds) is True) as r:
        yield r, pki


def test_c3_mutual_tls_serves_inference_and_health_on_one_port(tls: tuple[Replica, Pki]) -> None:
    replica, pki = tls
    with grpc.secure_channel(replica.endpoint, _credentials(pki, client_cert=True)) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answers = [decode(r) for r in stub.ModelStreamInfer(iter([infer_request(sampling={"max_tokens": 2})]),
                                                            timeout=10)]
    assert answers and answers[-1].final is True and not answers[-1].error


@pytest.mark.parametrize("client", ["tls-without-certificate", "plaintext"])
def test_c3_clients_without_a_certificate_are_refused(tls: tuple[Replica, Pki], client: str) -> None:
    replica, pki = tls
    creds = _credentials(pki, client_cert=False) if client != "plaintext" else None
    result = _model_ready(replica.endpoint, creds)
    assert isinstance(result, grpc.RpcError) and result.code() == grpc.StatusCode.UNAVAILABLE, result


def test_c3_metrics_port_is_plain_http(tls: tuple[Replica, Pki]) -> None:
    replica, _ = tls
    assert "vllm:generation_tokens_total" in scrape(replica.plan.metrics_port).types
