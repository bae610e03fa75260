"""The production Triton relabelling, applied by a real Prometheus.

Debian's Prometheus lacks Consul SD, so the targets come from file_sd carrying the
``__meta_consul_*`` labels Consul SD sets (Prometheus docs); the relabel rules are the
rendered ones, unchanged.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from obs_prom_server import PROMETHEUS, get_json, running_prometheus

from caravan.observability import prometheus as prom

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="prometheus not installed"),
]


def consul_target(service: str, service_id: str, metrics_port: str | None) -> dict[str, Any]:
    labels = {"__meta_consul_service": service, "__meta_consul_service_id": service_id,
              "__meta_consul_node": "node-1", "__meta_consul_service_port": "8001"}
    if metrics_port is not None:
        labels["__meta_consul_service_metadata_metrics_port"] = metrics_port
    return {"targets": ["10.0.0.7:8001"], "labels": labels}


def _targets(url: str, want_active: int) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        data = get_json(f"{url}/api/v1/targets")["data"]
        if len(data["activeTargets"]) >= want_active or time.monotonic() > deadline:
            return data
        time.sleep(0.2)


def test_triton_targets_scrape_meta_metrics_port(tmp_path: Path) -> None:
    groups = [consul_target("triton-llama-3-8b", "alloc-1-triton", "25002"),
              consul_target("triton-llama-3-8b", "alloc-2-triton", None)]
    (tmp_path / "targets.json").write_text(json.dumps(groups))
    job = {"job_name": "triton", "file_sd_configs": [{"files": ["targets.json"]}],
           "relabel_configs": prom.triton_relabel("triton-")}
    with running_prometheus(tmp_path, yaml.safe_dump({"scrape_configs": [job]})) as url:
        data = _targets(url, want_active=1)
    (active,) = data["activeTargets"]
    assert active["labels"] == {"instance": "10.0.0.7:25002", "job": "triton",
                                "caravan_model": "llama-3-8b", "replica": "alloc-1-triton",
                                "node": "node-1"}
    assert active["scrapeUrl"] == "http://10.0.0.7:25002/metrics"
    dropped = [t["discoveredLabels"]["__meta_consul_service_id"] for t in data["droppedTargets"]]
    assert dropped == ["alloc-2-triton"]
