"""Every PromQL string of the rendered Grafana dashboards parses in a real Prometheus.

A parse error is HTTP 400 ``bad_data``; empty results are fine (no data here).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from obs_prom_server import PROMETHEUS, get_json, running_prometheus

from caravan.observability import grafana

pytestmark = pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="prometheus not installed")

VARIABLES = {"model": "llama-3-8b", "__rate_interval": "1m", "__interval": "15s", "__range": "1h"}


def expand(expr: str) -> str:
    """Substitute Grafana variables ($x and ${x}) the way Grafana would before querying."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: VARIABLES[m.group(1) or m.group(2)], expr)


QUERIES = sorted({q for doc in grafana.dashboards().values() for q in grafana.panel_queries(doc)})


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_prometheus(tmp_path_factory.mktemp("prom"), "scrape_configs: []\n") as url:
        yield url


def test_every_dashboard_query_parses(prometheus: str) -> None:
    assert len(QUERIES) > 20
    bad = {}
    for expr in QUERIES:
        res = get_json(f"{prometheus}/api/v1/query", {"query": expand(expr)})
        if res.get("status") != "success":
            bad[expr] = res.get("error")
    assert not bad, bad


def test_a_broken_query_is_reported(prometheus: str) -> None:
    res = get_json(f"{prometheus}/api/v1/query", {"query": "sum by (model (x)"})
    assert res["status"] == "error" and res["errorType"] == "bad_data"
