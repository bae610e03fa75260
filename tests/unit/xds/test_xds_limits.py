"""Abuse limits of the control plane (pure): resource-name caps in both sessions,
clipped client text, rate-limited warnings (issue 17, Medium #5 and #6)."""

from __future__ import annotations

import pytest
from envoy.service.discovery.v3 import discovery_pb2
from xds_unit_helpers import make_spec, replica, sets

from caravan.xds.builder import build_snapshot
from caravan.xds.delta import DeltaSession
from caravan.xds.limits import MAX_RESOURCE_NAMES, WarningLimiter, clip, names_error
from caravan.xds.snapshot import ENDPOINT
from caravan.xds.sotw import SotwSession

SNAP = build_snapshot(make_spec(), sets(alpha=[replica("a0")]))


def _names(n: int, prefix: str = "c") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def test_clip_bounds_text_and_says_how_much_was_cut() -> None:
    assert clip("short") == "short"
    assert clip("x" * 1000, 10) == "x" * 10 + "... [990 more characters]"
    assert len(clip("y" * 10_000_000)) < 300
    with pytest.raises(ValueError, match="limit: must be >= 1, got 0"):
        clip("x", 0)


def test_names_error_names_the_count_and_the_limit() -> None:
    assert names_error("the request", MAX_RESOURCE_NAMES) is None
    assert names_error("the request", 5000) == (
        f"caravan xds: the request names 5000 resources; at most {MAX_RESOURCE_NAMES} are accepted")


def test_sotw_request_over_the_name_cap_is_refused_before_any_work() -> None:
    s = SotwSession()
    r = discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=_names(300_000))
    out = s.handle_request(r, SNAP)
    assert out.refused is not None and "300000" in out.refused
    assert out.responses == [] and s.types == {}
    ok = discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=_names(MAX_RESOURCE_NAMES))
    (resp,) = s.handle_request(ok, SNAP).responses
    assert len(resp.resources) == MAX_RESOURCE_NAMES


def test_delta_request_over_the_cap_and_subscription_growth_are_refused() -> None:
    s = DeltaSession()
    big = discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT, resource_names_subscribe=_names(600),
                                              resource_names_unsubscribe=_names(600, "u"))
    assert s.handle_request(big, SNAP).refused is not None
    half = MAX_RESOURCE_NAMES // 2 + 1
    first = discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT, resource_names_subscribe=_names(half))
    assert s.handle_request(first, SNAP).refused is None
    more = discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT,
                                               resource_names_subscribe=_names(half, "d"))
    out = s.handle_request(more, SNAP)
    assert out.refused is not None and "subscription" in out.refused and out.responses == []


def test_warning_limiter_admits_a_few_per_window_and_reports_the_dropped() -> None:
    now = [0.0]
    lim = WarningLimiter(per_window=3, window_s=10.0, clock=lambda: now[0])
    assert [lim.admit("nack") for _ in range(5)] == [0, 0, 0, None, None]
    assert lim.admit("unknown_type") == 0  # kinds are limited apart
    now[0] = 10.0
    assert lim.admit("nack") == 2
    assert lim.admit("nack") == 0
    with pytest.raises(ValueError, match="per_window must be >= 1"):
        WarningLimiter(per_window=0)
