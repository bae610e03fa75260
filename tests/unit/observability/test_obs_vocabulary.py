"""The metric vocabulary (caravan.observability.metric_names) is checked both ways:
every series Caravan's own emitters register is declared there, and every query Caravan
runs outside the rendered rules and dashboards (autoscaler signals, the replica-count
query) names only declared series. Rules and dashboards are checked in test_obs_rules
and test_obs_grafana."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from caravan.autoscaler.fleet import PrometheusReplicaCounts
from caravan.autoscaler.metrics import AutoscalerMetrics
from caravan.discovery.consul import DiscoveryMetrics
from caravan.observability import metric_names as names
from caravan.observability.promql import metric_names
from caravan.spec.autoscaling import SIGNALS
from caravan.triton.vllm_metrics import FAMILY_NAMES
from caravan.xds.clients import XdsMetrics


def registered(emitter: Callable[[CollectorRegistry], object]) -> set[str]:
    """The metric names an emitter registers, as Prometheus sees them (a counter family
    ``x`` is exposed as ``x_total``; labelled metrics have no sample until used)."""
    registry = CollectorRegistry()
    emitter(registry)
    return {f.name + "_total" if f.type == "counter" else f.name for f in registry.collect()}


@pytest.mark.parametrize("emitter", [XdsMetrics, DiscoveryMetrics, AutoscalerMetrics],
                         ids=["control-plane", "discovery", "autoscaler"])
def test_every_emitted_series_is_declared(emitter: Callable[[CollectorRegistry], object]) -> None:
    emitted = registered(emitter)
    assert emitted, "the emitter registered nothing"
    assert not {n for n in emitted if not names.is_exported(n)}


def test_the_replica_model_exports_the_declared_vllm_families() -> None:
    assert not {n for n in FAMILY_NAMES if not names.is_exported(n)}
    assert set(FAMILY_NAMES) >= names.VLLM  # the simulator exports every family the backend does


@pytest.mark.parametrize("signal", sorted(SIGNALS))
def test_autoscaler_signals_query_declared_series(signal: str) -> None:
    query = SIGNALS[signal].replace("{model}", "m")
    used = metric_names(query)
    assert used, f"{signal}: no metric found in {query}"
    assert not names.unknown_metrics(used)


def test_replica_count_query_names_declared_series() -> None:
    used = metric_names(PrometheusReplicaCounts.QUERY % "m")
    assert used == {"up"}
    assert not names.unknown_metrics(used)


def test_an_undeclared_name_is_caught() -> None:
    assert names.unknown_metrics({"vllm:num_requests_waiting"}) == {"vllm:num_requests_waiting"}
