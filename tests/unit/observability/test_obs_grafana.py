"""Grafana dashboards built with grafana-foundation-sdk (pure checks on the rendered JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from caravan.observability import grafana, rules
from caravan.observability.metric_names import unknown_metrics
from caravan.observability.promql import metric_names
from caravan.spec import load_spec

ROOT = Path(__file__).resolve().parents[3]
DASHBOARDS = grafana.dashboards()
SPEC = load_spec(ROOT / "examples" / "platform.yaml")


@pytest.mark.parametrize("name", sorted(DASHBOARDS), ids=sorted(DASHBOARDS))
def test_queries_name_only_known_metrics(name: str) -> None:
    recorded = rules.recorded_names(SPEC)
    for expr in grafana.panel_queries(DASHBOARDS[name]):
        assert not unknown_metrics(metric_names(expr), recorded), expr


@pytest.mark.parametrize("name", sorted(DASHBOARDS), ids=sorted(DASHBOARDS))
def test_every_panel_uses_the_provisioned_datasource(name: str) -> None:
    uid = grafana.datasource_provisioning()["datasources"][0]["uid"]
    for panel in DASHBOARDS[name]["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], panel["title"]


def _titles(doc: dict[str, Any]) -> set[str]:
    return {p["title"] for p in doc["panels"]}


REQUIRED = [
    ("requests", "Requests/s"), ("errors", "Errors"), ("latency", "End-to-end latency"),
    ("ttft", "Time to first token"), ("tokens", "Tokens/s"), ("in-flight", "In-flight requests"),
    ("replicas", "Replicas: desired vs running"), ("xds pushes", "xDS pushes/s"),
    ("xds nacks", "xDS NACKs"), ("gpu", "GPU utilisation"),
    ("in-stream failures", "In-stream failures"),
]


@pytest.mark.parametrize("title", [t for _, t in REQUIRED], ids=[i for i, _ in REQUIRED])
def test_model_dashboard_has_panel(title: str) -> None:
    assert title in _titles(DASHBOARDS["caravan-model.json"])


@pytest.mark.parametrize("name", sorted(DASHBOARDS), ids=sorted(DASHBOARDS))
def test_vllm_series_are_read_by_model_never_model_name(name: str) -> None:
    assert "model_name" not in json.dumps(DASHBOARDS[name])


def test_instream_failures_panel_shows_handed_over_finished_and_gap() -> None:
    panels = DASHBOARDS["caravan-model.json"]["panels"]
    panel = next(p for p in panels if p["title"] == "In-stream failures")
    exprs = [t["expr"] for t in panel["targets"]]
    assert exprs == [f'{name}{{model="$model"}}'
                     for name in (rules.SUCCESS_1M, rules.FINISHED_1M, rules.INSTREAM_1M)]


def test_model_dashboard_variable_and_annotation() -> None:
    doc = DASHBOARDS["caravan-model.json"]
    (var,) = doc["templating"]["list"]
    assert (var["name"], var["type"]) == ("model", "query")
    assert var["query"] == grafana.MODEL_VARIABLE_QUERY
    (ann,) = doc["annotations"]["list"]
    assert "caravan_autoscaler_decisions_total" in ann["expr"]
    per_model = [t["expr"] for p in doc["panels"] for t in p["targets"] if "xds" not in t["expr"]]
    assert all("$model" in e for e in per_model)


def test_latency_panels_show_p50_p95_p99_and_slo() -> None:
    panels = DASHBOARDS["caravan-model.json"]["panels"]
    panel = next(p for p in panels if p["title"] == "Time to first token")
    assert [t["legendFormat"] for t in panel["targets"]] == ["p50", "p95", "p99", "SLO (p95)"]


def test_panels_do_not_overlap() -> None:
    for doc in DASHBOARDS.values():
        cells: set[tuple[int, int]] = set()
        for p in doc["panels"]:
            g = p["gridPos"]
            xs, ys = range(g["x"], g["x"] + g["w"]), range(g["y"], g["y"] + g["h"])
            mine = {(x, y) for x in xs for y in ys}
            assert not cells & mine, p["title"]
            assert g["x"] + g["w"] <= 24
            cells |= mine


def test_bad_panel_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"PanelDef\.kind: 'pie'"):
        grafana._panel(grafana.PanelDef("x", (grafana.Query("up"),), kind="pie"))


def test_provisioning_files() -> None:
    files = grafana.render(SPEC)
    ds = yaml.safe_load(files[grafana.DATASOURCE_PATH])["datasources"][0]
    assert ds["url"] == "${CARAVAN_PROMETHEUS_URL}"
    provider = yaml.safe_load(files[grafana.PROVIDER_PATH])["providers"][0]
    assert provider["options"]["path"] == grafana.CONTAINER_DASHBOARDS
    assert json.loads(files["grafana/dashboards/caravan-model.json"])["uid"] == "caravan-model"


def test_checked_in_grafana_files_are_current() -> None:
    stale = [rel for rel, text in grafana.render(SPEC).items()
             if not (ROOT / rel).exists() or (ROOT / rel).read_text() != text]
    assert not stale, f"re-render with `caravan render`: {stale}"
