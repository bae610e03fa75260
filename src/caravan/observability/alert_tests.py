"""promtool unit tests (``prometheus/tests/<alert>.yml``) for every Caravan alert, pure.

Each alert gets cases that must fire and cases that must not, generated from the
spec (each model's own SLOs and replica bounds). Series use promtool's expanding
notation (``'0+10x20'``: start 0, add 10 per 1m interval, 20 times).
"""

from __future__ import annotations

from typing import Any

from caravan.observability import alerts as a
from caravan.observability.metric_names import JOB_TRITON, VLLM_BUCKETS
from caravan.observability.rules import Alert
from caravan.spec import ModelSpec, PlatformSpec

RULE_FILES = ["../rules/caravan-recording.yml", "../rules/caravan-alerts.yml"]
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def _case(
    alert: Alert, series: list[dict[str, str]], at: str, fires: list[dict[str, str]]
) -> dict[str, Any]:
    return {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [{
            "eval_time": at, "alertname": alert.name,
            "exp_alerts": [alert.expected(**labels) for labels in fires],
        }],
    }


def _histogram(
    metric: str, labels: dict[str, str], slo_s: float, slow: bool
) -> list[dict[str, str]]:
    """The vLLM backend's own buckets, 10 observations a minute: all at or below the SLO
    (fast), or all above the top finite bucket (slow: histogram_quantile then answers that
    bucket's bound, which the spec keeps above every SLO). When the SLO is below the first
    bucket, the fast case adds the SLO itself as a bound."""
    bounds = VLLM_BUCKETS[metric]
    under = [b for b in bounds if b <= slo_s] or [slo_s]
    fast_le = under[-1]
    grows = "0+10x20"
    counts = {f"{b:g}": grows if not slow and b >= fast_le else "0+0x20"
              for b in sorted({*bounds, fast_le})}
    counts["+Inf"] = grows
    return [_series(f"{metric}_bucket", {**labels, "le": le}, v) for le, v in counts.items()]


def _latency_cases(alert: Alert, metric: str, m: ModelSpec, slo_ms: float) -> list[dict[str, Any]]:
    labels = {"model": m.name, "version": "1"}
    slo_s = slo_ms / 1000.0
    return [
        _case(alert, _histogram(metric, labels, slo_s, slow=True), "15m", [{"model": m.name}]),
        _case(alert, _histogram(metric, labels, slo_s, slow=False), "15m", []),
        _case(alert, _histogram(metric, labels, slo_s, slow=True), "3m", []),  # not yet for 5m
    ]


def _error_cases(m: ModelSpec) -> list[dict[str, Any]]:
    """Triton failures, Envoy 5xx and in-stream failures (success counted, e2e not) fire;
    a healthy engine (every request handed over also finishes) stays quiet."""
    t = {"model": m.name, "version": "1"}
    five = {"envoy_cluster_name": m.cluster_name, "envoy_response_code_class": "5"}
    ok = _series("nv_inference_request_success", t, "0+60x20")

    def finished(values: str) -> dict[str, str]:
        return _series("vllm:e2e_request_latency_seconds_count", t, values)

    done, slo, fired = finished("0+60x20"), m.slo.error_ratio, [{"model": m.name}]
    alert = a.ERROR_RATIO_HIGH
    return [
        _case(alert, [ok, done, _series("nv_inference_request_failure", t, "0+60x20")], "15m",
              fired),
        _case(alert, [ok, done, _series("envoy_cluster_upstream_rq_xx", five, "0+60x20")],
              "15m", fired),
        _case(alert, [ok, finished("0+60x5 300+0x15")], "15m", fired),  # engine stops finishing
        _case(alert, [ok, finished(f"0+{60 * (1 - 2 * slo):g}x20")], "15m", fired),
        _case(alert, [ok, finished(f"0+{60 * (1 - slo / 2):g}x20")], "15m", []),
        _case(alert, [ok, done, _series("nv_inference_request_failure", t, "0+0x20")], "15m", []),
        _case(alert, [ok, done], "15m", []),  # healthy engine
        _case(alert, [ok], "15m", []),  # no failure series at all: ratio 0
    ]


def _membership(m: ModelSpec, total: str, healthy: str, excluded: str) -> list[dict[str, str]]:
    values = {"total": total, "healthy": healthy, "degraded": "0x20", "excluded": excluded}
    return [_series(f"envoy_cluster_membership_{kind}", {"envoy_cluster_name": m.cluster_name}, v)
            for kind, v in values.items()]


def _unhealthy_cases(m: ModelSpec) -> list[dict[str, Any]]:
    """A member failing health checks for 30 s fires; draining (excluded) members, all
    healthy, or a failure seen at one evaluation only, do not."""
    alert = a.REPLICA_UNHEALTHY
    return [
        _case(alert, _membership(m, "3x20", "2x20", "0x20"), "2m", [{"model": m.name}]),
        _case(alert, _membership(m, "3x20", "2x20", "1x20"), "2m", []),  # draining
        _case(alert, _membership(m, "3x20", "3x20", "0x20"), "2m", []),
        _case(alert, _membership(m, "3x20", "3 3 3 3 2", "0x20"), "4m", []),  # pending, < 30s
    ]


def _restarted_cases(m: ModelSpec) -> list[dict[str, Any]]:
    """A counter that falls back on the same target fires; steady growth, a series that
    ends (drained) or a replica that never served do not."""
    alert, labels = a.REPLICA_RESTARTED, {"model": m.name, "version": "1", "job": JOB_TRITON,
                                          "instance": "10.0.0.1:8001"}

    def counter(values: str) -> list[dict[str, str]]:
        return [_series("nv_inference_request_success", labels, values)]

    return [
        _case(alert, counter("0 5 10 15 _ 0 2 4"), "7m", [{"model": m.name}]),
        _case(alert, counter("0 5 10 15 20 25 30 35"), "7m", []),
        _case(alert, counter("0 5 10 15 _ _ _ _"), "7m", []),  # drained: the series just ends
        _case(alert, counter("0 0 0 0 _ 0 0 0"), "7m", []),
    ]


def _healthy(spec: PlatformSpec, model: str, value: str) -> list[dict[str, str]]:
    return [_series("envoy_cluster_membership_healthy", {"envoy_cluster_name": m.cluster_name},
                    value if m.name == model else "1x20") for m in spec.models]


def _no_healthy_cases(spec: PlatformSpec, m: ModelSpec) -> list[dict[str, Any]]:
    alert = a.NO_HEALTHY_REPLICAS
    want = _series(a.DESIRED, {"model": m.name}, "1x20")
    others = [s for s in _healthy(spec, m.name, "") if m.cluster_name not in s["series"]]
    cases = [
        _case(alert, [*_healthy(spec, m.name, "0x20"), want], "5m", [{"model": m.name}]),
        _case(alert, [*others, want], "5m", [{"model": m.name}]),  # Envoy reports nothing
        _case(alert, [*_healthy(spec, m.name, "2x20"), want], "5m", []),
    ]
    if m.replicas.min == 0:  # scaled to zero on purpose: no page
        idle = _series(a.DESIRED, {"model": m.name}, "0x20")
        cases.append(_case(alert, [*_healthy(spec, m.name, "0x20"), idle], "5m", []))
    return cases


def _nack_cases() -> list[dict[str, Any]]:
    alert, label = a.XDS_NACK, {"type": CDS}
    return [
        _case(alert, [_series(a.NACKS, label, "0 0 0 1 1 1 1 1 1 1")], "4m", [label]),
        _case(alert, [_series(a.NACKS, label, "_ _ _ 1 1 1 1 1 1 1")], "4m", [label]),  # new series
        _case(alert, [_series(a.NACKS, label, "0 1 1 1 1 1 1 1 1 1 1 1")], "10m", []),  # old NACK
        _case(alert, [_series(a.NACKS, label, "0x20")], "10m", []),
    ]


def _pinned_cases(m: ModelSpec) -> list[dict[str, Any]]:
    alert, top = a.AUTOSCALER_PINNED_AT_MAX, m.replicas.max
    return [
        _case(alert, [_series(a.DESIRED, {"model": m.name}, f"{top}x30")], "20m",
              [{"model": m.name}]),
        _case(alert, [_series(a.DESIRED, {"model": m.name}, f"{top}x30")], "10m", []),  # < 15m
        _case(alert, [_series(a.DESIRED, {"model": m.name}, f"{top - 1}x30")], "20m", []),
    ]


def _flapping_cases(m: ModelSpec) -> list[dict[str, Any]]:
    alert, label = a.REPLICA_COUNT_FLAPPING, {"model": m.name}
    return [
        _case(alert, [_series(a.DESIRED, label, "1 2 1 2 1 2 1 2 1 2 1")], "10m", [label]),
        _case(alert, [_series(a.DESIRED, label, "1 2 3 4 5 5 5 5 5 5 5")], "10m", []),  # ramp
        _case(alert, [_series(a.DESIRED, label, "2x10")], "10m", []),
    ]


def _discovery_cases(m: ModelSpec) -> list[dict[str, Any]]:
    alert = a.DISCOVERY_FAILING
    where = {"instance": "10.0.0.5:18001", "model": m.name}
    series = {"job": "caravan-xds", **where}
    return [
        _case(alert, [_series(a.DISCOVERY_UP, series, "1 1 0 0 0 0 0 0")], "6m", [where]),
        _case(alert, [_series(a.DISCOVERY_UP, series, "1 0 1 0 1 0 1 1")], "6m", []),  # blips
        _case(alert, [_series(a.DISCOVERY_UP, series, "1x10")], "6m", []),
    ]


def _cases(alert: Alert, spec: PlatformSpec) -> list[dict[str, Any]]:
    per_model = {
        a.TTFT_ABOVE_SLO.name: lambda m: _latency_cases(
            a.TTFT_ABOVE_SLO, "vllm:time_to_first_token_seconds", m, m.slo.ttft_ms),
        a.E2E_ABOVE_SLO.name: lambda m: _latency_cases(
            a.E2E_ABOVE_SLO, "vllm:e2e_request_latency_seconds", m, m.slo.e2e_ms),
        a.ERROR_RATIO_HIGH.name: _error_cases,
        a.NO_HEALTHY_REPLICAS.name: lambda m: _no_healthy_cases(spec, m),
        a.REPLICA_UNHEALTHY.name: _unhealthy_cases,
        a.REPLICA_RESTARTED.name: _restarted_cases,
        a.AUTOSCALER_PINNED_AT_MAX.name: _pinned_cases,
        a.REPLICA_COUNT_FLAPPING.name: _flapping_cases,
        a.DISCOVERY_FAILING.name: _discovery_cases,
    }
    if alert.name == a.XDS_NACK.name:
        return _nack_cases()
    return [case for m in spec.models for case in per_model[alert.name](m)]


def alert_test_files(spec: PlatformSpec) -> dict[str, dict[str, Any]]:
    """File name -> promtool test document, one per alert in ``alerts.ALERTS``."""
    return {
        f"{alert.name}.yml": {"rule_files": RULE_FILES, "evaluation_interval": "1m",
                              "tests": _cases(alert, spec)}
        for alert in a.ALERTS
    }
