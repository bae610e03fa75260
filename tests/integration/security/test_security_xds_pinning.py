"""xDS mTLS with pinned Envoy identities (``security.xds_tls.client_sans``, issue 17
High #2): over real gRPC on loopback, a client certificate from the trusted CA is
served only when it carries a pinned SAN (DNS or URI); others get PERMISSION_DENIED."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID
from envoy.service.discovery.v3 import discovery_pb2
from prometheus_client import CollectorRegistry
from tests.integration.security.sec_pki import _ca, _name, _write_cert, _write_key, make_pki
from tests.integration.xds.test_xds_ads_protocol import snap, sotw

from caravan.spec import XdsTls
from caravan.xds.cache import SnapshotCache
from caravan.xds.clients import ClientRegistry, XdsMetrics
from caravan.xds.server import XdsServer, tls_credentials
from caravan.xds.snapshot import CLUSTER

pytestmark = pytest.mark.integration


def _client(ca_key: object, ca: x509.Certificate, d: Path, name: str,
            sans: list[x509.GeneralName]) -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), False)
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    return (_write_key(key, d / f"{name}.key").read_bytes(),
            _write_cert(cert, d / f"{name}.pem").read_bytes())


ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


async def _code(port: int, ca: bytes, pair: tuple[bytes, bytes]) -> grpc.StatusCode:
    """OK once the stream answers a CDS request with the clusters, else the status the
    server ended it with. The server refuses an unpinned client as the stream opens,
    before reading its request, so the request and the half-close go in one batch
    (``unary_stream`` on the ADS path; the server then serves it and ends the stream):
    a separate ``write`` racing the refusal can fail after the status arrived, and
    grpc's aio client then reports its own INTERNAL instead (grpc/grpc#36066)."""
    creds = grpc.ssl_channel_credentials(ca, pair[0], pair[1])
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as ch:
        ads = ch.unary_stream(ADS, request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                              response_deserializer=discovery_pb2.DiscoveryResponse.FromString)
        call = ads(sotw(CLUSTER), timeout=10)
        try:
            resp = await call.read()
        except grpc.aio.AioRpcError as err:
            return err.code()
        assert resp is not grpc.aio.EOF and resp.type_url == CLUSTER and resp.resources
        call.cancel()
        return grpc.StatusCode.OK


@pytest.mark.parametrize("pins", [("envoy.caravan",), ("spiffe://caravan/envoy",)],
                         ids=["dns", "uri"])
def test_only_pinned_client_identities_get_the_config(tmp_path: Path, pins: tuple[str, ...]) -> None:
    pki = make_pki(tmp_path)
    ca_key, ca = _ca("xds clients")
    ca_path = _write_cert(ca, tmp_path / "clients-ca.pem")
    envoy = _client(ca_key, ca, tmp_path, "envoy", [
        x509.DNSName("envoy.caravan"), x509.UniformResourceIdentifier("spiffe://caravan/envoy")])
    other = _client(ca_key, ca, tmp_path, "other", [x509.DNSName("other.caravan")])
    bare = _client(ca_key, ca, tmp_path, "bare", [])
    tls = XdsTls(cert_file=str(pki.server_cert), key_file=str(pki.server_key), ca_file=str(pki.ca),
                 client_ca_file=str(ca_path), client_cert_file="x", client_key_file="y",
                 client_sans=pins)

    async def scenario() -> None:
        cache, registry = SnapshotCache(), CollectorRegistry()
        cache.set_snapshot(snap(1))
        server = XdsServer(cache, ClientRegistry(), XdsMetrics(registry), port=0)
        server.use_credentials(tls_credentials(tls), tls.client_sans)
        port = await server.start()
        try:
            root = pki.ca.read_bytes()
            assert await _code(port, root, envoy) == grpc.StatusCode.OK
            assert await _code(port, root, other) == grpc.StatusCode.PERMISSION_DENIED
            assert await _code(port, root, bare) == grpc.StatusCode.PERMISSION_DENIED
        finally:
            await server.stop(0)

    asyncio.run(asyncio.wait_for(scenario(), 30))
