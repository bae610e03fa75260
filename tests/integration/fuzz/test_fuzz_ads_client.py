"""Bad input: a misbehaving xDS client. Hypothesis sends streams of raw
DiscoveryRequests (random type URLs, nonces, versions, resource names, error_detail)
and raw garbage bytes to the real in-process ADS server (grpc.aio on loopback). The
server must never crash, must answer only with known types, and a well-behaved client
connected the whole time must keep getting config (it receives a later EDS change)."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from caravan.discovery.types import Replica, ReplicaSet
from caravan.spec import parse_spec
from caravan.xds.builder import build_snapshot
from caravan.xds.cache import SnapshotCache
from caravan.xds.clients import ClientRegistry, XdsMetrics
from caravan.xds.server import XdsServer
from caravan.xds.snapshot import CLUSTER, ENDPOINT, TYPE_ORDER, Snapshot

pytestmark = pytest.mark.integration

SPEC = parse_spec({"models": [{"name": "alpha", "engine": {"model": "m/a"}}]})
ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


def snap(*ports: int) -> Snapshot:
    rs = ReplicaSet.of("alpha", [Replica(f"a{p}", "alpha", "127.0.0.1", p) for p in ports])
    return build_snapshot(SPEC, {"alpha": rs})


class Server:
    """An XdsServer on an event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.cache = SnapshotCache()
        self.cache.set_snapshot(snap(9001))
        self.metrics = XdsMetrics(CollectorRegistry())
        self.server: XdsServer = self.call(self._make())
        self.port = self.call(self.server.start())

    async def _make(self) -> XdsServer:  # grpc.aio objects belong to the loop that makes them
        return XdsServer(self.cache, ClientRegistry(), self.metrics, port=0)

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def publish(self, s: Snapshot) -> None:
        async def set_it() -> None:
            self.cache.set_snapshot(s)
        self.call(set_it())

    def stop(self) -> None:
        self.call(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)


class GoodClient:
    """A well-behaved SotW client subscribed to CDS and EDS(model-alpha), ACKing."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.out: queue.Queue[Any] = queue.Queue()
        self.got: queue.Queue[discovery_pb2.DiscoveryResponse] = queue.Queue()
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        self.call = stub.StreamAggregatedResources(iter(self.out.get, None))
        threading.Thread(target=self._read, daemon=True).start()
        node = discovery_pb2.DiscoveryRequest().node
        node.id = "good"
        self.out.put(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, node=node))
        self.out.put(discovery_pb2.DiscoveryRequest(type_url=ENDPOINT,
                                                    resource_names=["model-alpha"]))

    def _read(self) -> None:
        try:
            for resp in self.call:
                self.got.put(resp)
                self.out.put(discovery_pb2.DiscoveryRequest(
                    type_url=resp.type_url, version_info=resp.version_info,
                    response_nonce=resp.nonce,
                    resource_names=["model-alpha"] if resp.type_url == ENDPOINT else []))
        except grpc.RpcError:
            pass

    def next_of(self, type_url: str, timeout_s: float = 5.0) -> discovery_pb2.DiscoveryResponse:
        while True:
            resp = self.got.get(timeout=timeout_s)
            if resp.type_url == type_url:
                return resp


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def channel(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture(scope="module")
def good(channel: grpc.Channel) -> GoodClient:
    client = GoodClient(channel)
    client.next_of(CLUSTER)
    client.next_of(ENDPOINT)
    return client


type_urls = st.one_of(st.sampled_from(TYPE_ORDER), st.text(max_size=30),
                      st.just("type.googleapis.com/envoy.config.cluster.v3.Nope"))
requests = st.builds(
    lambda t, v, n, names, code, msg, node: discovery_pb2.DiscoveryRequest(
        type_url=t, version_info=v, response_nonce=n, resource_names=names,
        error_detail=status_pb2.Status(code=code, message=msg) if code or msg else None,
        node={"id": node} if node else None),
    type_urls, st.text(max_size=20), st.one_of(st.just(""), st.text(max_size=6),
                                               st.integers(0, 5).map(str)),
    st.lists(st.text(max_size=20), max_size=4), st.integers(0, 20), st.text(max_size=40),
    st.text(max_size=10))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reqs=st.lists(requests, min_size=1, max_size=8))
def test_random_requests_never_crash_the_server(channel: grpc.Channel, good: GoodClient,
                                                reqs: list[discovery_pb2.DiscoveryRequest]
                                                ) -> None:
    """Random DiscoveryRequests (type URLs, nonces, versions, names, error_detail):
    no crash, only known types answered."""
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    call = stub.StreamAggregatedResources(iter(reqs), timeout=0.3)
    try:
        for resp in call:
            assert resp.type_url in TYPE_ORDER, resp.type_url
            assert resp.nonce
    except grpc.RpcError as err:
        assert err.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED), err


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blobs=st.lists(st.binary(max_size=200), min_size=1, max_size=4))
def test_garbage_bytes_get_a_grpc_error(channel: grpc.Channel, good: GoodClient,
                                        blobs: list[bytes]) -> None:
    """Garbage bytes on the ADS stream get a gRPC error, never a crash."""
    raw = channel.stream_stream(ADS, request_serializer=lambda b: b,
                                response_deserializer=lambda b: b)
    try:
        for _ in raw(iter(blobs), timeout=0.3):
            pass  # bytes that happen to parse as a request may get a response
    except grpc.RpcError as err:
        assert err.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED,
                              grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN), err


def test_well_behaved_client_still_gets_config(server: Server, good: GoodClient) -> None:
    """Runs after the fuzz (file order): the good stream, open all along, gets a change."""
    server.publish(snap(9001, 9002))
    resp = good.next_of(ENDPOINT)
    assert b"9002" in resp.resources[0].value or len(resp.resources[0].value) > 0
    from envoy.config.endpoint.v3 import endpoint_pb2

    cla = endpoint_pb2.ClusterLoadAssignment()
    resp.resources[0].Unpack(cla)
    ports = {e.endpoint.address.socket_address.port_value
             for g in cla.endpoints for e in g.lb_endpoints}
    assert ports == {9001, 9002}
