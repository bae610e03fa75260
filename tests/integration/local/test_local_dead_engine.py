"""A replica whose simulated engine dies, in `caravan up`'s stack with the real tritonserver:
the next request it gets fails in-stream (the vLLM backend's health check unloads the
model), the supervisor sees ModelReady turn false, unregisters the replica (Envoy stops
sending it traffic) and restarts it in place, after which it serves again; the stack's
real Prometheus fires CaravanReplicaRestarted.
Bounded: at most 200 probe requests, 90 s in all.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from caravan.discovery.registry_file import read_registry
from caravan.local.health import infer_once
from caravan.local.process import venv_binary, wait_until
from caravan.local.supervisor import LocalPorts, LocalStack, StackOptions
from caravan.observability.alerts import REPLICA_RESTARTED
from caravan.spec import parse_spec


def _have_prometheus() -> bool:
    try:
        venv_binary("prometheus")
        return True
    except FileNotFoundError:
        return False


pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not _have_prometheus(), reason="prometheus not installed")]
MODEL = "alpha"
SPEC = {"models": [{"name": MODEL, "engine": {"model": "a"}, "replicas": {"min": 1, "initial": 2, "max": 2}}]}


def envoy_ports(stack: LocalStack) -> set[int]:
    """Ports of the endpoints Envoy has for the model's cluster (admin /clusters)."""
    url = f"http://127.0.0.1:{stack.ports.envoy_admin}/clusters?format=json"
    with urllib.request.urlopen(url, timeout=5) as resp:
        statuses = json.load(resp)["cluster_statuses"]
    return {h["address"]["socket_address"]["port_value"]
            for c in statuses if c["name"].endswith(MODEL) for h in c.get("host_statuses", [])}


def query(prometheus: str, expr: str) -> list[dict[str, str]]:
    """The label sets of ``expr``'s series (instant query)."""
    args = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query?{args}", timeout=5) as resp:
        return [r["metric"] for r in json.load(resp)["data"]["result"]]


def firing(prometheus: str, alert: str) -> list[dict[str, str]]:
    return query(prometheus, f'ALERTS{{alertname="{alert}",alertstate="firing"}}')


def test_dead_engine_is_unregistered_then_restarted(tmp_path: Path) -> None:
    options = StackOptions(time_scale=0.01, prometheus=True, drain_grace_s=0.5)
    with LocalStack(parse_spec(SPEC), tmp_path, LocalPorts.free(), options) as stack:
        victim = stack.replicas(MODEL)[0]
        plan = next(p for p in stack.replica_plans(MODEL) if p.grpc_port == victim.port)
        assert all(infer_once(victim.endpoint, MODEL) for _ in range(3))
        # Prometheus must have scraped the victim's counter before the engine dies.
        served_by_victim = f'nv_inference_request_success{{replica="{victim.id}"}} >= 3'
        wait_until(lambda: bool(query(stack.prometheus_url or "", served_by_victim)), 20, "a scrape")
        plan.fault_file.touch()
        # The backend checks its engine when a request arrives: probe the victim directly.
        wait_until(lambda: not infer_once(victim.endpoint, MODEL, timeout_s=2), 10, "failed request")
        registered = lambda: victim.id in {r.id for r in read_registry(stack.registry_path)}  # noqa: E731
        wait_until(lambda: not registered(), 10, "unregistration")
        # Envoy follows once the control plane has pushed the new endpoints (~0.1-0.5 s).
        wait_until(lambda: victim.port not in envoy_ports(stack), 5, "the victim leaving Envoy")
        served = [infer_once(stack.endpoint, MODEL, timeout_s=5) for _ in range(20)]
        assert all(served), "Envoy still sent requests to the dead replica"
        wait_until(registered, 40, "restarted replica back in the registry")
        assert infer_once(victim.endpoint, MODEL)
        assert stack.prometheus_url is not None
        wait_until(lambda: bool(firing(stack.prometheus_url or "", REPLICA_RESTARTED.name)), 20,
                   f"{REPLICA_RESTARTED.name} firing")
        assert [a["model"] for a in firing(stack.prometheus_url, REPLICA_RESTARTED.name)] == [MODEL]
