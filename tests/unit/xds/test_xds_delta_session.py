"""Delta protocol state machine (pure): only changes, removals, reconnect, subscriptions."""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2
from xds_unit_helpers import make_spec, replica, sets

from caravan.xds.builder import build_snapshot
from caravan.xds.delta import DeltaSession
from caravan.xds.snapshot import CLUSTER, ENDPOINT

SPEC = make_spec()
ONE = make_spec(models=[SPEC.models[0].model_dump()])
SNAP = build_snapshot(SPEC, sets(alpha=[replica("a0")]))


def req(
    type_url: str,
    sub: tuple[str, ...] = (),
    unsub: tuple[str, ...] = (),
    nonce: str = "",
    initial: dict[str, str] | None = None,
    error: str | None = None,
) -> discovery_pb2.DeltaDiscoveryRequest:
    r = discovery_pb2.DeltaDiscoveryRequest(
        type_url=type_url,
        resource_names_subscribe=sub,
        resource_names_unsubscribe=unsub,
        response_nonce=nonce,
        initial_resource_versions=initial or {},
    )
    r.node.id = "envoy-d"
    if error is not None:
        r.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    return r


def names(resp: discovery_pb2.DeltaDiscoveryResponse) -> list[str]:
    return [r.name for r in resp.resources]


def test_wildcard_gets_all_then_only_changes() -> None:
    s = DeltaSession()
    (first,) = s.handle_request(req(CLUSTER), SNAP).responses
    assert names(first) == ["model-alpha", "model-beta"]
    assert s.handle_request(req(CLUSTER, nonce=first.nonce), SNAP).acked == (
        CLUSTER,
        SNAP.version(CLUSTER),
    )
    models = [m.model_dump() for m in SPEC.models]
    models[1]["routing"]["maglev_table_size"] = 1033
    (update,) = s.handle_snapshot(build_snapshot(make_spec(models=models), {})).responses
    assert names(update) == ["model-beta"] and list(update.removed_resources) == []


def test_deleted_resource_is_sent_as_removed_after_updates() -> None:
    s = DeltaSession()
    s.handle_request(req(CLUSTER), SNAP)
    (removal,) = s.handle_snapshot(build_snapshot(ONE, {})).responses
    assert list(removal.removed_resources) == ["model-beta"] and names(removal) == []


def test_initial_resource_versions_are_honoured_on_reconnect() -> None:
    have = {n: vr.version for n, vr in SNAP.get(CLUSTER).items()}
    have["model-old"] = "v-old"
    s = DeltaSession()
    out = s.handle_request(req(CLUSTER, initial=have), SNAP).responses
    assert [list(r.removed_resources) for r in out] == [["model-old"]]
    assert all(not r.resources for r in out)


def test_named_subscription_and_unsubscribe_even_with_stale_nonce() -> None:
    s = DeltaSession()
    (first,) = s.handle_request(req(ENDPOINT, sub=("model-alpha",)), SNAP).responses
    assert names(first) == ["model-alpha"]
    out = s.handle_request(req(ENDPOINT, sub=("model-beta", "model-ghost"), nonce="999"), SNAP)
    assert out.stale
    (more,) = out.responses
    assert names(more) == ["model-beta", "model-ghost"]  # ghost: an empty assignment
    s.handle_request(req(ENDPOINT, unsub=("model-beta",), nonce="998"), SNAP)
    assert s.types[ENDPOINT].names == {"model-alpha", "model-ghost"}


def test_nacked_resource_version_is_not_resent_until_it_changes() -> None:
    s = DeltaSession()
    (first,) = s.handle_request(req(ENDPOINT, sub=("model-alpha",)), SNAP).responses
    out = s.handle_request(req(ENDPOINT, nonce=first.nonce, error="rejected"), SNAP)
    assert out.nack is not None and out.nack.message == "rejected"
    assert s.handle_snapshot(SNAP).responses == []
    (again,) = s.handle_snapshot(
        build_snapshot(SPEC, sets(alpha=[replica("a0"), replica("a1", port=2)]))
    ).responses
    assert names(again) == ["model-alpha"]
