"""Production and local prometheus.yml rendering (pure)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from caravan.observability import prometheus as prom
from caravan.spec import PlatformSpec, parse_spec


def _spec(consul: dict[str, Any] | None = None) -> PlatformSpec:
    data: dict[str, Any] = {"models": [{"name": "a", "engine": {"model": "x"}},
                                       {"name": "b", "engine": {"model": "y"}}]}
    if consul is not None:
        data["consul"] = consul
    return parse_spec(data)


def _jobs(spec: PlatformSpec) -> dict[str, dict[str, Any]]:
    return {j["job_name"]: j for j in prom.production_config(spec)["scrape_configs"]}


def test_triton_services_follow_prefix() -> None:
    sd = _jobs(_spec({"service_prefix": "llm-"}))["triton"]["consul_sd_configs"][0]
    assert sd["services"] == ["llm-a", "llm-b"]


COMPONENT_CASES = [
    ("envoy", "envoy", prom.ENVOY_SERVICE, "/stats/prometheus"),
    ("control plane", "caravan-xds", prom.XDS_SERVICE, "/metrics"),
    ("autoscaler", "caravan-autoscaler", prom.AUTOSCALER_SERVICE, "/metrics"),
]


@pytest.mark.parametrize(("job", "service", "path"), [c[1:] for c in COMPONENT_CASES],
                         ids=[c[0] for c in COMPONENT_CASES])
def test_component_jobs(job: str, service: str, path: str) -> None:
    cfg = _jobs(_spec())[job]
    assert cfg["consul_sd_configs"][0]["services"] == [service]
    assert cfg["metrics_path"] == path


CONSUL_CASES = [
    ("defaults", {}, {"server": "127.0.0.1:8500", "scheme": "http", "datacenter": "dc1"}),
    ("token file", {"token_file": "/secrets/consul"},
     {"authorization": {"credentials_file": "/secrets/consul"}}),
    ("tls", {"scheme": "https", "ca_file": "/ca.pem"},
     {"scheme": "https", "tls_config": {"ca_file": "/ca.pem"}}),
    ("datacenter", {"datacenter": "eu1"}, {"datacenter": "eu1"}),
]


@pytest.mark.parametrize(("consul", "expected"), [c[1:] for c in CONSUL_CASES],
                         ids=[c[0] for c in CONSUL_CASES])
def test_consul_sd_settings(consul: dict[str, Any], expected: dict[str, Any]) -> None:
    sd = _jobs(_spec(consul))["triton"]["consul_sd_configs"][0]
    assert expected.items() <= sd.items()
    assert "token" not in sd  # never a secret in the rendered file


def test_datacenter_falls_back_to_the_first_nomad_datacenter() -> None:
    """Without ``datacenter`` Prometheus calls /v1/agent/self (agent:read) before any watch."""
    spec = parse_spec({"models": [{"name": "a", "engine": {"model": "x"}}],
                       "nomad": {"datacenters": ["us-east", "us-west"]}})
    assert {sd["datacenter"] for job in prom.production_config(spec)["scrape_configs"]
            for sd in job["consul_sd_configs"]} == {"us-east"}


HEALTH_CASES = [
    ("passing only", {}, "passing"),
    ("warning too when it gets traffic", {"allow_warning": True}, "passing|warning"),
]


@pytest.mark.parametrize(("consul", "regex"), [c[1:] for c in HEALTH_CASES],
                         ids=[c[0] for c in HEALTH_CASES])
def test_every_job_keeps_only_healthy_instances(consul: dict[str, Any], regex: str) -> None:
    for job in _jobs(_spec(consul)).values():
        assert job["relabel_configs"][0] == {"source_labels": ["__meta_consul_health"],
                                             "regex": regex, "action": "keep"}, job["job_name"]


def test_triton_relabel_uses_metrics_port_and_escaped_prefix() -> None:
    relabel = prom.triton_relabel("triton.")
    assert relabel[0] == {"source_labels": ["__meta_consul_service_metadata_metrics_port"],
                          "regex": "", "action": "drop"}
    assert relabel[1]["target_label"] == "__address__"
    assert relabel[2]["regex"] == r"triton\.(.+)"
    assert "model" not in {r.get("target_label") for r in relabel}


def test_static_config_static_targets() -> None:
    doc = yaml.safe_load(prom.static_config(
        "127.0.0.1:9901", {"b": ["127.0.0.1:2"], "a": ["127.0.0.1:1"], "idle": []},
        control_plane="127.0.0.1:3", rule_files=["/r/x.yml"], scrape_interval_s=0.5))
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    assert set(jobs) == {"envoy", "caravan-xds", "triton"}
    assert jobs["envoy"]["metrics_path"] == "/stats/prometheus"
    assert jobs["triton"]["static_configs"] == [
        {"targets": ["127.0.0.1:1"], "labels": {"caravan_model": "a"}},
        {"targets": ["127.0.0.1:2"], "labels": {"caravan_model": "b"}}]
    assert doc["global"]["scrape_interval"] == "500ms"
    assert doc["rule_files"] == ["/r/x.yml"]


@pytest.mark.parametrize("bad", [0.0, -1.0, 0.0004], ids=["zero", "negative", "sub-ms"])
def test_static_config_rejects_bad_interval(bad: float) -> None:
    with pytest.raises(ValueError, match="scrape_interval_s"):
        prom.static_config("127.0.0.1:1", {}, scrape_interval_s=bad)


def test_render_is_deterministic_and_complete() -> None:
    first, second = prom.render(_spec()), prom.render(_spec())
    assert first == second
    assert {prom.CONFIG_PATH, prom.RECORDING_PATH, prom.ALERTS_PATH} <= set(first)
    assert not any(rel.endswith((".hcl", ".json")) for rel in first)  # its Nomad job: caravan.nomad.jobs
    assert all(text.startswith(prom.HEADER) for rel, text in first.items() if rel.endswith(".yml"))


def test_production_config_token_override() -> None:
    spec = _spec({"token_file": "/host/consul.token"})
    sd = lambda cfg: cfg["scrape_configs"][0]["consul_sd_configs"][0]  # noqa: E731
    assert sd(prom.production_config(spec))["authorization"] == {
        "credentials_file": "/host/consul.token"}
    assert sd(prom.production_config(spec, "/secrets/t"))["authorization"] == {
        "credentials_file": "/secrets/t"}
    assert "authorization" not in sd(prom.production_config(spec, None))
