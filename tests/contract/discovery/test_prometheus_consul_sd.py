"""Prometheus under Consul ACLs (issue 14, deliver 4), against the Consul fake.

Prometheus v2.53's ``discovery/consul/consul.go`` is replayed here request for request:
``initialize`` calls ``/v1/agent/self`` (retrying every 15 s forever) unless the config
names a ``datacenter``; each watched service is read with
``health.ServiceMultipleTags(name, nil, false, {AllowStale, WaitIndex, WaitTime: 2m})``,
i.e. ``GET /v1/health/service/<name>?dc=<dc>&stale&index=<i>&wait=120000ms`` with the
``credentials_file`` token as ``Authorization: Bearer``; each entry's
``__meta_consul_health`` is ``HealthChecks.AggregatedStatus()`` (maintenance > critical >
warning > passing). The rendered config and the documented policy must discover exactly
the passing replicas, and no call may need ``agent:read``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from tests.fakes.consul import ConsulFake

from caravan.observability import prometheus as prom
from caravan.spec import PlatformSpec, parse_spec

TOKEN = "7a3c9d2e-1111-4000-8000-0000000000aa"


@pytest.fixture
def spec() -> PlatformSpec:
    return parse_spec({"models": [{"name": "llama", "engine": {"model": "x"}}],
                       "consul": {"token_file": "/secrets/consul.token"}})


@pytest.fixture
def fake(spec: PlatformSpec) -> Iterator[ConsulFake]:
    with ConsulFake(acl_default_policy="deny") as f:
        f.set_token(TOKEN, prom.consul_acl_policy(spec))
        meta = {"metrics_port": "8002"}
        f.register("triton-llama", "ok", address="10.0.0.1", node="gpu-1", meta=meta)
        f.register("triton-llama", "warn", address="10.0.0.2", node="gpu-2", meta=meta,
                   check_status="warning")
        f.register("triton-llama", "dead", address="10.0.0.3", node="gpu-3", meta=meta,
                   check_status="critical")
        f.register("triton-llama", "drain", address="10.0.0.4", node="gpu-4", meta=meta)
        f.maintenance("drain", True, node="gpu-4")
        f.register("caravan-xds-admin", "xds-0", address="10.0.0.9", node="gpu-1", port=18001)
        yield f


def aggregated_status(checks: list[dict[str, Any]]) -> str:
    """Consul's ``api.HealthChecks.AggregatedStatus`` (what ``__meta_consul_health`` is)."""
    seen = set()
    for c in checks:
        if c["CheckID"] == "_node_maintenance" or c["CheckID"].startswith("_service_maintenance:"):
            return "maintenance"
        seen.add(c["Status"])
    for status in ("critical", "warning", "passing"):
        if status in seen:
            return status
    return "passing"


def prometheus_watch(fake: ConsulFake, sd: dict[str, Any], service: str) -> list[dict[str, Any]]:
    """One ``consulService.watch`` call as Prometheus makes it (first, non-blocking)."""
    assert "datacenter" in sd, "without it Prometheus first needs /v1/agent/self"
    r = requests.get(f"{fake.base_url}/v1/health/service/{service}",
                     params={"dc": sd["datacenter"], "stale": ""},
                     headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert r.status_code == 200, r.text
    assert "X-Consul-Results-Filtered-By-ACLs" not in r.headers, "the policy reads everything"
    return list(r.json())


def kept(relabel: list[dict[str, Any]], entries: list[dict[str, Any]]) -> list[str]:
    """Service ids of the targets the config's first (health) relabel rule keeps."""
    rule = relabel[0]
    assert rule["source_labels"] == ["__meta_consul_health"] and rule["action"] == "keep"
    return [e["Service"]["ID"] for e in entries
            if re.fullmatch(rule["regex"], aggregated_status(e["Checks"]))]


def test_rendered_config_discovers_passing_replicas_with_the_documented_policy(
    fake: ConsulFake, spec: PlatformSpec
) -> None:
    config = prom.production_config(spec)
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    for job in jobs.values():
        (sd,) = job["consul_sd_configs"]
        assert sd["datacenter"] == fake.datacenter
        assert sd["authorization"] == {"credentials_file": "/secrets/consul.token"}
    triton = jobs["triton"]
    entries = prometheus_watch(fake, triton["consul_sd_configs"][0], "triton-llama")
    assert sorted(e["Service"]["ID"] for e in entries) == ["dead", "drain", "ok", "warn"]
    assert kept(triton["relabel_configs"], entries) == ["ok"]
    xds = jobs["caravan-xds"]
    assert kept(xds["relabel_configs"], prometheus_watch(fake, xds["consul_sd_configs"][0],
                                                         "caravan-xds-admin")) == ["xds-0"]
    assert not any(r.path == "/v1/agent/self" for r in fake.requests)


def test_without_a_datacenter_prometheus_would_need_agent_read(fake: ConsulFake) -> None:
    """What ``Discovery.initialize`` runs into when the config names no datacenter."""
    r = requests.get(f"{fake.base_url}/v1/agent/self",
                     headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert r.status_code == 403 and "agent:read" in r.text
    fake.set_token(TOKEN, 'agent_prefix "" { policy = "read" }')
    r = requests.get(f"{fake.base_url}/v1/agent/self",
                     headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert r.json()["Config"]["Datacenter"] == fake.datacenter


def test_allow_warning_scrapes_warning_replicas_too(fake: ConsulFake) -> None:
    spec = parse_spec({"models": [{"name": "llama", "engine": {"model": "x"}}],
                       "consul": {"allow_warning": True}})
    triton = prom.production_config(spec)["scrape_configs"][0]
    entries = prometheus_watch(fake, triton["consul_sd_configs"][0], "triton-llama")
    assert sorted(kept(triton["relabel_configs"], entries)) == ["ok", "warn"]
