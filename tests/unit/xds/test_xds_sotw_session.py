"""SotW protocol state machine (pure): ACK/NACK, parking, stale nonces, order, reconnect."""

from __future__ import annotations

from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2
from xds_unit_helpers import make_spec, replica, sets, unpack

from caravan.xds.builder import build_snapshot
from caravan.xds.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE
from caravan.xds.sotw import SotwSession

SPEC = make_spec()
SNAP = build_snapshot(SPEC, sets(alpha=[replica("a0")]))
SNAP2 = build_snapshot(SPEC, sets(alpha=[replica("a0"), replica("a1", port=9001)]))


def req(
    type_url: str,
    names: tuple[str, ...] = (),
    version: str = "",
    nonce: str = "",
    error: str | None = None,
) -> discovery_pb2.DiscoveryRequest:
    r = discovery_pb2.DiscoveryRequest(
        type_url=type_url, resource_names=names, version_info=version, response_nonce=nonce
    )
    r.node.id = "envoy-1"
    if error is not None:
        r.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return r


def test_initial_wildcard_request_gets_everything_then_ack_is_quiet() -> None:
    s = SotwSession()
    (resp,) = s.handle_request(req(CLUSTER), SNAP).responses
    assert resp.version_info == SNAP.version(CLUSTER) and len(resp.resources) == 2
    out = s.handle_request(req(CLUSTER, version=resp.version_info, nonce=resp.nonce), SNAP)
    assert out.acked == (CLUSTER, SNAP.version(CLUSTER)) and out.responses == []
    assert s.node_id == "envoy-1"


def test_nack_is_by_error_detail_and_parks_the_version() -> None:
    s = SotwSession()
    (resp,) = s.handle_request(req(ENDPOINT, ("model-alpha",)), SNAP).responses
    # A NACK carries the *previous* version (here ""), and an error_detail.
    out = s.handle_request(req(ENDPOINT, ("model-alpha",), "", resp.nonce, error="bad"), SNAP)
    assert out.nack is not None and out.nack.message == "bad" and out.acked is None
    assert out.nack.version == resp.version_info
    # Envoy asks again: the same version must not be resent.
    assert s.handle_request(req(ENDPOINT, ("model-alpha",), "", resp.nonce), SNAP).responses == []
    assert s.handle_snapshot(SNAP).responses == []
    # A new snapshot version goes out.
    (again,) = s.handle_snapshot(SNAP2).responses
    assert again.version_info != resp.version_info


def test_ack_with_unchanged_version_string_is_still_an_ack() -> None:
    s = SotwSession()
    (resp,) = s.handle_request(req(CLUSTER), SNAP).responses
    out = s.handle_request(req(CLUSTER, version="whatever", nonce=resp.nonce), SNAP)
    assert out.nack is None and out.acked == (CLUSTER, "whatever")


def test_stale_nonce_is_ignored() -> None:
    s = SotwSession()
    (first,) = s.handle_request(req(ENDPOINT, ("model-alpha",)), SNAP).responses
    (second,) = s.handle_snapshot(SNAP2).responses
    out = s.handle_request(
        req(ENDPOINT, ("model-alpha", "model-beta"), first.version_info, first.nonce, error="old"),
        SNAP2,
    )
    assert out.stale and out.nack is None and out.responses == []
    assert s.types[ENDPOINT].names == frozenset({"model-alpha"})  # ignored entirely
    assert s.handle_request(
        req(ENDPOINT, ("model-alpha",), second.version_info, second.nonce), SNAP2
    ).acked


def test_unknown_eds_name_gets_an_empty_assignment() -> None:
    s = SotwSession()
    (resp,) = s.handle_request(req(ENDPOINT, ("model-alpha", "model-ghost")), SNAP).responses
    clas = [unpack(r, endpoint_pb2.ClusterLoadAssignment) for r in resp.resources]
    assert [c.cluster_name for c in clas] == ["model-alpha", "model-ghost"]
    assert len(clas[0].endpoints) == 1 and len(clas[1].endpoints) == 0


def test_changes_go_out_in_cds_eds_lds_rds_order() -> None:
    s = SotwSession()
    for t, names in (
        (ROUTE, ("caravan-routes",)),
        (LISTENER, ()),
        (ENDPOINT, ("model-alpha",)),
        (CLUSTER, ()),
    ):
        s.handle_request(req(t, names), SNAP)
    spec2 = make_spec(
        envoy={"listen_port": 8181},
        models=[
            {**m.model_dump(), "routing": {**m.routing.model_dump(), "maglev_table_size": 1033}}
            for m in SPEC.models
        ],
    )
    out = s.handle_snapshot(build_snapshot(spec2, sets(alpha=[replica("a0")])))
    assert [r.type_url for r in out.responses] == [CLUSTER, ENDPOINT, LISTENER]


def test_reconnecting_client_with_current_version_gets_nothing_until_a_change() -> None:
    s = SotwSession()
    assert s.handle_request(req(CLUSTER, version=SNAP.version(CLUSTER)), SNAP).responses == []
    # A listener-only change leaves CDS alone (and LDS is not subscribed on this stream).
    assert (
        s.handle_snapshot(build_snapshot(make_spec(envoy={"listen_port": 1}), {})).responses == []
    )
    models = [
        {**m.model_dump(), "routing": {**m.routing.model_dump(), "maglev_table_size": 1033}}
        for m in SPEC.models
    ]
    (resp,) = s.handle_snapshot(build_snapshot(make_spec(models=models), {})).responses
    assert resp.type_url == CLUSTER


def test_reconnecting_client_with_old_version_gets_the_current_one() -> None:
    s = SotwSession()
    (resp,) = s.handle_request(req(CLUSTER, version="stale-version"), SNAP).responses
    assert resp.version_info == SNAP.version(CLUSTER)


def test_unknown_type_is_reported_not_answered() -> None:
    out = SotwSession().handle_request(req("type.googleapis.com/some.Other"), SNAP)
    assert out.unknown_type and out.responses == []
