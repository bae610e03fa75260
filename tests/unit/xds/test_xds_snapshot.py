"""Snapshot versions (content hashes), EDS folding, consistency check, incremental builds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from xds_unit_helpers import DRAINING, make_spec, replica, sets

from caravan.xds.builder import SnapshotBuilder, build_snapshot
from caravan.xds.snapshot import (
    CLUSTER,
    ENDPOINT,
    ROUTE,
    TYPE_ORDER,
    Snapshot,
    SnapshotInconsistent,
    check_consistency,
)

SPEC = make_spec()
BASE = sets(alpha=[replica("a0", port=1), replica("a1", port=2)], beta=[replica("b0", "beta", 3)])


def test_same_input_same_versions() -> None:
    a, b = build_snapshot(SPEC, BASE), build_snapshot(make_spec(), dict(BASE))
    assert a.versions == b.versions
    assert {t: {n: r.version for n, r in a.get(t).items()} for t in TYPE_ORDER} == {
        t: {n: r.version for n, r in b.get(t).items()} for t in TYPE_ORDER
    }


def test_versions_identical_across_processes() -> None:
    """Two control-plane instances fed the same state must agree (HA failover)."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from xds_unit_helpers import make_spec, replica, sets;"
        "from caravan.xds.builder import build_snapshot;"
        "s = build_snapshot(make_spec(), sets(alpha=[replica('a0', port=1), replica('a1', port=2)],"
        " beta=[replica('b0', 'beta', 3)]));"
        "print(','.join(s.versions[t] for t in sorted(s.versions)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    snap = build_snapshot(SPEC, BASE)
    assert out == ",".join(snap.versions[t] for t in sorted(snap.versions))


@pytest.mark.parametrize(
    ("change", "changed_types", "changed_clusters"),
    [
        ("replica-added", {ENDPOINT}, {"model-alpha"}),
        ("replica-draining", {ENDPOINT}, {"model-alpha"}),
        ("replica-order-only", set(), set()),
        ("timeout-of-beta", {ROUTE}, set()),
    ],
    ids=[
        "replica-added",
        "replica-draining",
        "same-set-other-order",
        "timeout-of-beta-routes-only",
    ],
)
def test_only_what_changed_gets_a_new_version(
    change: str, changed_types: set[str], changed_clusters: set[str]
) -> None:
    spec, now = SPEC, dict(BASE)
    if change == "replica-added":
        now["alpha"] = sets(alpha=[*BASE["alpha"].replicas, replica("a2", port=4)])["alpha"]
    elif change == "replica-draining":
        now["alpha"] = sets(alpha=[replica("a0", port=1, health=DRAINING), replica("a1", port=2)])[
            "alpha"
        ]
    elif change == "replica-order-only":
        now["alpha"] = sets(alpha=list(reversed(BASE["alpha"].replicas)))["alpha"]
    else:
        models = [m.model_dump() for m in SPEC.models]
        models[1]["routing"]["unary_timeout_s"] = 5
        spec = make_spec(models=models)
    before, after = build_snapshot(SPEC, BASE), build_snapshot(spec, now)
    assert {t for t in TYPE_ORDER if before.version(t) != after.version(t)} == changed_types
    assert {
        n for n, r in after.get(ENDPOINT).items() if before.get(ENDPOINT)[n].version != r.version
    } == changed_clusters


def test_eds_version_folds_in_the_cluster_version() -> None:
    """A changed cluster with unchanged endpoints still gets a new EDS version,
    or Envoy would leave the re-created cluster warming."""
    models = [m.model_dump() for m in SPEC.models]
    models[0]["routing"]["maglev_table_size"] = 65537
    before, after = build_snapshot(SPEC, BASE), build_snapshot(make_spec(models=models), BASE)
    assert before.get(CLUSTER)["model-alpha"].version != after.get(CLUSTER)["model-alpha"].version
    assert (
        before.get(ENDPOINT)["model-alpha"].resource == after.get(ENDPOINT)["model-alpha"].resource
    )
    assert before.get(ENDPOINT)["model-alpha"].version != after.get(ENDPOINT)["model-alpha"].version


def test_every_model_gets_a_cluster_and_an_assignment_even_without_replicas() -> None:
    snap = build_snapshot(SPEC, {})
    assert set(snap.get(CLUSTER)) == set(snap.get(ENDPOINT)) == {"model-alpha", "model-beta"}
    check_consistency(snap)


@pytest.mark.parametrize(
    ("drop", "problem"),
    [
        (ENDPOINT, "cluster 'model-alpha' references missing ClusterLoadAssignment 'model-alpha'"),
        (ROUTE, "listener 'caravan-grpc' references missing RouteConfiguration 'caravan-routes'"),
    ],
    ids=["missing-eds", "missing-rds"],
)
def test_consistency_check_names_what_is_missing(drop: str, problem: str) -> None:
    snap = build_snapshot(SPEC, BASE)
    broken = Snapshot.of({t: ({} if t == drop else snap.get(t)) for t in TYPE_ORDER})
    with pytest.raises(SnapshotInconsistent) as err:
        check_consistency(broken)
    assert problem in err.value.problems


def test_builder_rebuilds_only_the_changed_model() -> None:
    b = SnapshotBuilder()
    first = b.build(SPEC, BASE)
    assert b.rebuilt == 2
    again = b.build(SPEC, dict(BASE))
    assert b.rebuilt == 0 and again.versions == first.versions
    now = dict(BASE, beta=sets(beta=[replica("b0", "beta", 3), replica("b1", "beta", 5)])["beta"])
    third = b.build(SPEC, now)
    assert b.rebuilt == 1
    assert third.versions == build_snapshot(SPEC, now).versions


def test_snapshot_json_lists_versions_and_resources() -> None:
    data = build_snapshot(SPEC, BASE).to_json()
    assert set(data) == {"cds", "eds", "lds", "rds"}
    assert data["eds"]["resources"]["model-alpha"]["resource"]["clusterName"] == "model-alpha"
    assert data["cds"]["version"] == build_snapshot(SPEC, BASE).version(CLUSTER)
