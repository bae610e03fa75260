"""Grafana dashboards and provisioning for Caravan, built with grafana-foundation-sdk (pure).

Two dashboards: ``caravan-overview`` (every model and the control plane) and
``caravan-model`` (one model, chosen by the ``model`` template variable, with
scaling decisions as annotations). Panels are declared as ``PanelDef`` tables and
built with the SDK's builders; ``render(spec)`` returns relative path -> JSON/YAML
text. Queries use Caravan's recording rules (``caravan.observability.rules``) where one
exists; ``panel_queries`` lists every PromQL string a dashboard sends.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from grafana_foundation_sdk.builders import common as gcommon
from grafana_foundation_sdk.builders import dashboard as gdash
from grafana_foundation_sdk.builders import prometheus as gprom
from grafana_foundation_sdk.builders import stat as gstat
from grafana_foundation_sdk.builders import timeseries as gts
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as mcommon
from grafana_foundation_sdk.models import dashboard as mdash

from caravan.observability import rules as r
from caravan.spec import PlatformSpec

DATASOURCE_UID = "caravan-prometheus"
DATASOURCE = mdash.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
PROMETHEUS_URL_ENV = "CARAVAN_PROMETHEUS_URL"
DASHBOARDS_DIR = "grafana/dashboards"
DATASOURCE_PATH = "grafana/provisioning/datasources/prometheus.yml"
PROVIDER_PATH = "grafana/provisioning/dashboards/caravan.yml"
CONTAINER_DASHBOARDS = "/var/lib/grafana/dashboards/caravan"

M = '{model="$model"}'
CLUSTER = 'envoy_cluster_name="model-$model"'
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class PanelDef:
    """One panel: ``kind`` is "timeseries" or "stat"; ``unit`` a Grafana unit id
    ("s", "reqps", "percentunit", "short"); ``width`` in grid columns (24 = full)."""

    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    description: str = ""


def _quantiles(names: dict[str, str], slo: str, sel: str = M) -> tuple[Query, ...]:
    qs = tuple(Query(f"{names[p]}{sel}", p) for p, _ in r.QUANTILES)
    return (*qs, Query(f"{slo}{sel}", "SLO (p95)"))


def model_panels() -> tuple[PanelDef, ...]:
    """Panels of the per-model dashboard (every query filters on ``$model``)."""
    return (
        PanelDef("Requests/s", (Query(f"{r.REQUESTS_1M}{M}"),), "reqps", "stat", 6, 4),
        PanelDef("Error ratio (5m)", (Query(f"{r.ERROR_RATIO_5M}{M}"),), "percentunit",
                 "stat", 6, 4),
        PanelDef("p95 TTFT", (Query(f"{r.TTFT_Q['p95']}{M}"),), "s", "stat", 6, 4),
        PanelDef("Healthy replicas", (Query(f"{r.HEALTHY}{M}"),), "short", "stat", 6, 4),
        PanelDef("Requests/s", (
            Query(f"{r.REQUESTS_1M}{M}", "inference requests (replicas)"),
            Query(f"{r.ENVOY_REQUESTS_1M}{M}", "gRPC calls (Envoy)"),
        ), "reqps", description="Inference requests counted by the replicas; gRPC calls "
                                "(a stream is one call) counted by Envoy."),
        PanelDef("Errors", (
            Query(f"{r.ERROR_RATIO_5M}{M}", "error ratio (5m)"),
            Query(f"{r.SLO_ERRORS}{M}", "SLO"),
        ), "percentunit", description="(Triton failures + Envoy 5xx + in-stream failures) / "
                                      "all requests."),
        PanelDef("End-to-end latency", _quantiles(r.E2E_Q, r.SLO_E2E), "s"),
        PanelDef("Time to first token", _quantiles(r.TTFT_Q, r.SLO_TTFT), "s"),
        PanelDef("Tokens/s", (
            Query(f"{r.OUTPUT_TOKENS_1M}{M}", "output"),
            Query(f"{r.PROMPT_TOKENS_1M}{M}", "prompt"),
        ), "short"),
        PanelDef("In-flight requests", (
            Query(f"{r.INFLIGHT}{M}", "in flight (Envoy)"),
            Query(f"{r.INFLIGHT_PER_REPLICA}{M}", "per healthy replica"),
            Query(f"sum(envoy_cluster_upstream_rq_pending_active{{{CLUSTER}}})",
                  "pending in Envoy"),
        ), "short", description="Envoy's active + pending requests on model-$model (a stream "
                                "is one request until it ends); pending ones wait for a "
                                "connection or a circuit-breaker slot."),
        PanelDef("Replicas: desired vs running", (
            Query(f"max(caravan_autoscaler_desired_count{M})", "desired"),
            Query(f"max(caravan_autoscaler_current_count{M})", "running (autoscaler)"),
            Query(f"{r.HEALTHY}{M}", "healthy (Envoy)"),
            Query(f"{r.UNHEALTHY}{M}", "failing health checks (Envoy)"),
            Query(f"{r.REPLICAS_MAX}{M}", "max"),
        ), "short"),
        PanelDef("Autoscaler check values", (
            Query(f"caravan_autoscaler_check_value{M}", "{{check}}"),
        ), "short"),
        PanelDef("In-stream failures", (
            Query(f"{r.SUCCESS_1M}{M}", "handed to the engine (Triton success)"),
            Query(f"{r.FINISHED_1M}{M}", "finished (vLLM e2e count)"),
            Query(f"{r.INSTREAM_1M}{M}", "in-stream failures"),
        ), "reqps", description="Engine errors go to the client inside a gRPC-OK stream: "
                                "requests handed over minus requests finished, 1m. Ramps "
                                "in traffic show as a small gap too."),
        PanelDef("GPU utilisation", (
            Query('avg by (replica, gpu_uuid) (nv_gpu_utilization{caravan_model="$model"})',
                  "{{replica}} {{gpu_uuid}}"),
        ), "percentunit", description="Reported by Triton on GPUs; empty for the simulator."),
        *control_plane_panels(),
    )


def control_plane_panels() -> tuple[PanelDef, ...]:
    """xDS pushes and NACKs (shared by both dashboards)."""
    return (
        PanelDef("xDS pushes/s", (
            Query(f"sum by (type) (rate(caravan_xds_pushes_total[{RATE}]))", "{{type}}"),
        ), "short"),
        PanelDef("xDS NACKs", (
            Query(f"sum by (type) (increase(caravan_xds_nacks_total[{RATE}]))", "{{type}}"),
        ), "short", description="Envoy rejected a config; it keeps the previous one."),
    )


def overview_panels() -> tuple[PanelDef, ...]:
    """Panels of the platform overview (one series per model)."""
    by_model = "{{model}}"
    return (
        PanelDef("Firing Caravan alerts", (
            Query('count(ALERTS{alertstate="firing",alertname=~"Caravan.*"}) or vector(0)'),
        ), "short", "stat", 6, 4),
        PanelDef("Requests/s (all models)", (Query(f"sum({r.REQUESTS_1M})"),), "reqps",
                 "stat", 6, 4),
        PanelDef("Output tokens/s (all models)", (Query(f"sum({r.OUTPUT_TOKENS_1M})"),),
                 "short", "stat", 6, 4),
        PanelDef("Connected Envoys", (Query("sum(caravan_xds_connected_clients)"),),
                 "short", "stat", 6, 4),
        PanelDef("Requests/s by model", (Query(r.REQUESTS_1M, by_model),), "reqps"),
        PanelDef("Error ratio by model", (Query(r.ERROR_RATIO_5M, by_model),), "percentunit"),
        PanelDef("p95 TTFT by model", (Query(r.TTFT_Q["p95"], by_model),), "s"),
        PanelDef("p95 end-to-end latency by model", (Query(r.E2E_Q["p95"], by_model),), "s"),
        PanelDef("Output tokens/s by model", (Query(r.OUTPUT_TOKENS_1M, by_model),), "short"),
        PanelDef("In-flight per replica by model", (Query(r.INFLIGHT_PER_REPLICA, by_model),),
                 "short"),
        PanelDef("In-stream failures/s by model", (Query(r.INSTREAM_1M, by_model),), "reqps"),
        PanelDef("Healthy and unhealthy replicas by model", (
            Query(r.HEALTHY, "{{model}} healthy"),
            Query(r.UNHEALTHY, "{{model}} failing health checks"),
        ), "short"),
        PanelDef("Desired replicas by model", (
            Query("max by (model) (caravan_autoscaler_desired_count)", by_model),
        ), "short"),
        *control_plane_panels(),
        PanelDef("Snapshot build p99", (
            Query("histogram_quantile(0.99, sum by (le) "
                  f"(rate(caravan_xds_snapshot_build_seconds_bucket[{RATE}])))", "p99"),
        ), "s"),
        PanelDef("Discovery errors/s", (
            Query(f"sum(rate(caravan_discovery_errors_total[{RATE}]))", "errors"),
            Query(f"sum(rate(caravan_discovery_skipped_entries_total[{RATE}]))", "skipped entries"),
        ), "short"),
    )


SCALING_ANNOTATION = (
    "sum by (model, direction) (increase(caravan_autoscaler_decisions_total"
    '{model="$model",action="scaled"}[1m])) > 0'
)
MODEL_VARIABLE_QUERY = f"label_values({r.SLO_TTFT}, model)"


def _target(q: Query, ref: str) -> gprom.Dataquery:
    return gprom.Dataquery().expr(q.expr).legend_format(q.legend or "__auto").ref_id(ref)


def _stat() -> gstat.Panel:
    last = gcommon.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
    return gstat.Panel().graph_mode(mcommon.BigValueGraphMode.AREA).reduce_options(last)


def _timeseries() -> gts.Panel:
    legend = (gcommon.VizLegendOptions().show_legend(True).placement(mcommon.LegendPlacement.BOTTOM)
              .display_mode(mcommon.LegendDisplayMode.LIST))
    tooltip = gcommon.VizTooltipOptions().mode(mcommon.TooltipDisplayMode.MULTI)
    return gts.Panel().legend(legend).tooltip(tooltip).fill_opacity(10).line_width(1)


def _panel(p: PanelDef) -> gts.Panel | gstat.Panel:
    if p.kind not in ("stat", "timeseries"):
        raise ValueError(f"PanelDef.kind: {p.kind!r} for panel {p.title!r}; "
                         "expected 'stat' or 'timeseries'")
    panel: gts.Panel | gstat.Panel = _stat() if p.kind == "stat" else _timeseries()
    panel = panel.title(p.title).datasource(DATASOURCE).unit(p.unit).span(p.width).height(p.height)
    if p.description:
        panel = panel.description(p.description)
    for i, q in enumerate(p.queries):
        panel = panel.with_target(_target(q, chr(ord("A") + i)))
    return panel


def _dashboard(uid: str, title: str, panels: Sequence[PanelDef]) -> gdash.Dashboard:
    d = (gdash.Dashboard(title).uid(uid).tags(["caravan"]).time("now-30m", "now")
         .refresh("10s").timezone("browser").editable())
    for p in panels:
        d = d.with_panel(_panel(p))
    return d


def overview_dashboard() -> dict[str, Any]:
    """The platform overview as Grafana dashboard JSON (a dict)."""
    return _to_dict(_dashboard("caravan-overview", "Caravan: platform overview", overview_panels()))


def model_dashboard() -> dict[str, Any]:
    """The per-model dashboard (``model`` variable, scaling-decision annotations)."""
    variable = (gdash.QueryVariable("model").label("Model").datasource(DATASOURCE)
                .query(MODEL_VARIABLE_QUERY).refresh(mdash.VariableRefresh.ON_DASHBOARD_LOAD)
                .sort(mdash.VariableSort.ALPHABETICAL_ASC))
    annotation = (gdash.AnnotationQuery().name("Scaling decisions").datasource(DATASOURCE)
                  .enable(True).icon_color("orange").expr(SCALING_ANNOTATION))
    d = _dashboard("caravan-model", "Caravan: model", model_panels())
    return _to_dict(d.with_variable(variable).annotation(annotation))


def _to_dict(d: gdash.Dashboard) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(d.build(), cls=JSONEncoder))
    return out


def panel_queries(dashboard: dict[str, Any]) -> Iterator[str]:
    """Every PromQL string a dashboard JSON sends: panel targets, variables, annotations."""
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            yield str(target["expr"])
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        if isinstance(query, str) and not query.startswith("label_values("):
            yield query
        elif isinstance(query, str):  # label_values(<selector>, label): check the selector
            yield query.removeprefix("label_values(").rsplit(",", 1)[0]
    for ann in dashboard.get("annotations", {}).get("list", []):
        if ann.get("expr"):
            yield str(ann["expr"])


def datasource_provisioning() -> dict[str, Any]:
    """Grafana datasource provisioning; the URL comes from ``$CARAVAN_PROMETHEUS_URL``."""
    return {"apiVersion": 1, "datasources": [{
        "name": "Prometheus", "uid": DATASOURCE_UID, "type": "prometheus", "access": "proxy",
        "url": f"${{{PROMETHEUS_URL_ENV}}}", "isDefault": True, "editable": False,
        "jsonData": {"timeInterval": "15s"},
    }]}


def dashboard_provider(path: str = CONTAINER_DASHBOARDS) -> dict[str, Any]:
    """Grafana dashboard provider reading the JSON files in ``path`` (inside Grafana's box)."""
    return {"apiVersion": 1, "providers": [{
        "name": "caravan", "orgId": 1, "folder": "Caravan", "type": "file",
        "disableDeletion": True, "allowUiUpdates": False, "options": {"path": path},
    }]}


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON dict."""
    return {"caravan-overview.json": overview_dashboard(), "caravan-model.json": model_dashboard()}


def json_text(doc: dict[str, Any]) -> str:
    """A dashboard as the JSON file text Caravan writes (sorted keys, 2-space indent)."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def render(spec: PlatformSpec) -> dict[str, str]:
    """Relative path -> text of the Grafana artefacts (deterministic; the Nomad job that
    runs Grafana is rendered by ``caravan.nomad.jobs``). The dashboards do not depend on the
    spec: the ``model`` variable lists the spec's models at run time."""
    header = "# Rendered by `caravan render`. Do not edit by hand.\n"
    out = {f"{DASHBOARDS_DIR}/{name}": json_text(doc) for name, doc in dashboards().items()}
    out[DATASOURCE_PATH] = header + yaml.safe_dump(datasource_provisioning(), sort_keys=False)
    out[PROVIDER_PATH] = header + yaml.safe_dump(dashboard_provider(), sort_keys=False)
    return out
