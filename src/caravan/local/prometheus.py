"""Real Prometheus for the local stack: config, file-based replica targets, argv.

Replica targets live in a file_sd JSON file that the supervisor rewrites on every
scale event; Prometheus re-reads it by itself (no reload needed).
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from caravan.atomic_file import atomic_write_text
from caravan.discovery.types import Replica
from caravan.local.launch import http_get
from caravan.observability.metric_names import JOB_ENVOY
from caravan.observability.prometheus import local_scrape_config
from caravan.spec import PlatformSpec

if TYPE_CHECKING:
    from caravan.local.supervisor import LocalPorts

TARGETS_FILE = "replica-targets.json"


def stack_config(ports: LocalPorts, rule_files: Iterable[str] = ()) -> dict[str, Any]:
    """Prometheus config scraping Envoy, the control plane and every replica (from the
    file_sd ``TARGETS_FILE``) every 1 s: ``local_scrape_config``, the generator the live
    rule tests run."""
    return local_scrape_config(
        f"127.0.0.1:{ports.envoy_admin}", replica_file=TARGETS_FILE,
        control_plane=f"127.0.0.1:{ports.xds_admin}", rule_files=tuple(rule_files))


def write_stack_config(directory: Path, spec: PlatformSpec, ports: LocalPorts) -> Path:
    """Write prometheus.yml (+ rule files rendered from the spec) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    rules = _write_rules(directory, spec)
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(stack_config(ports, rules), sort_keys=False))
    if not (directory / TARGETS_FILE).exists():
        write_replica_targets(directory, [])
    return path


def _write_rules(directory: Path, spec: PlatformSpec) -> list[str]:
    from caravan.observability.prometheus import render

    out: list[str] = []
    for rel, text in sorted(render(spec).items()):
        if "/rules/" in rel and rel.endswith((".yml", ".yaml")):
            dest = directory / "rules" / Path(rel).name
            dest.parent.mkdir(exist_ok=True)
            dest.write_text(text)
            out.append(str(dest))
    return out


def targets_text(replicas: Iterable[Replica]) -> str:
    """The file_sd targets: one group per replica, labelled ``caravan_model`` and
    ``replica`` (not ``model``, which Triton's own series carry)."""
    groups = [
        {"targets": [f"{r.address}:{r.metrics_port}"], "labels": {"caravan_model": r.model, "replica": r.id}}
        for r in replicas if r.metrics_port is not None
    ]
    return json.dumps(groups)


def write_replica_targets(directory: Path, replicas: Iterable[Replica]) -> None:
    """Atomically rewrite the file_sd targets (``targets_text``). Raises OSError."""
    atomic_write_text(directory / TARGETS_FILE, targets_text(replicas))


def prometheus_argv(binary: str, config: Path, data_dir: Path, port: int) -> list[str]:
    return [
        binary, f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=2h",
        "--web.enable-lifecycle",
    ]


def envoy_scraped(port: int, timeout_s: float = 1.0) -> bool:
    """True once the Prometheus on 127.0.0.1:``port`` holds a successful scrape of Envoy
    (``up{job="envoy"} == 1``). False before that, which lasts ~5 s after Prometheus
    starts (its service discovery hands the scrapers their first targets on a 5 s tick),
    and when Prometheus cannot be reached or answers with an error."""
    query = urllib.parse.quote(f'up{{job="{JOB_ENVOY}"}} == 1')
    try:
        status, body = http_get(port, f"/api/v1/query?query={query}", timeout_s)
        return status == 200 and bool(json.loads(body)["data"]["result"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
