"""Snapshot build cost of the xDS control plane (issue 3, item 8: build figures).

    .venv/bin/python benchmarks/xds_build.py [--models 100 --endpoints 100 --clients 50 --repeat 20]

Measures, in one process: a full snapshot build of M models x E endpoints (fresh
``SnapshotBuilder``), the incremental rebuild after one model's replica set changes
(memo hit for every other model), the fan-out cost of that change to N SotW sessions
(the per-stream protocol work the ADS server does; no sockets), and the process RSS
afterwards. Targets: full build of 10,000 endpoints <= 250 ms; one-model rebuild
<= 10 ms; RSS <= 200 MB. Prints figures and writes benchmarks/results/xds_build.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from caravan.discovery.types import Replica, ReplicaSet
from caravan.spec import PlatformSpec, parse_spec
from caravan.xds.builder import SnapshotBuilder
from caravan.xds.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE
from caravan.xds.sotw import SotwSession

RESULTS = Path(__file__).parent / "results"


def make_spec(models: int) -> PlatformSpec:
    return parse_spec(
        {"models": [{"name": f"m{i:03d}", "engine": {"model": f"org/m{i}"}} for i in range(models)]}
    )


def make_sets(spec: PlatformSpec, endpoints: int, salt: int = 0) -> dict[str, ReplicaSet]:
    return {
        m.name: ReplicaSet.of(
            m.name,
            [
                Replica(
                    f"{m.name}-{j}",
                    m.name,
                    f"10.{i % 250}.{j // 250}.{j % 250}",
                    9000 + salt,
                    zone=f"z{j % 3}",
                )
                for j in range(endpoints)
            ],
        )
        for i, m in enumerate(spec.models)
    }


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def subscribe(session: SotwSession, snap: Any, names: list[str]) -> None:
    """Drive a session through the initial CDS/EDS/LDS/RDS exchange and ACK everything."""
    for type_url, wanted in (
        (CLUSTER, []),
        (ENDPOINT, names),
        (LISTENER, []),
        (ROUTE, ["caravan-routes"]),
    ):
        out = session.handle_request(
            discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=wanted), snap
        )
        for resp in out.responses:
            session.handle_request(
                discovery_pb2.DiscoveryRequest(
                    type_url=type_url,
                    resource_names=wanted,
                    version_info=resp.version_info,
                    response_nonce=resp.nonce,
                ),
                snap,
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--endpoints", type=int, default=100)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    spec = make_spec(args.models)
    sets = make_sets(spec, args.endpoints)
    full = [
        timed(lambda: SnapshotBuilder().build(spec, sets))[0]
        for _ in range(max(3, args.repeat // 4))
    ]
    builder = SnapshotBuilder()
    snap = builder.build(spec, sets)
    sessions = [SotwSession() for _ in range(args.clients)]
    for s in sessions:
        subscribe(s, snap, sorted(snap.get(ENDPOINT)))
    one, fanout, pushed = [], [], 0
    for k in range(args.repeat):
        changed = dict(sets)
        victim = spec.models[k % len(spec.models)].name
        changed[victim] = make_sets(spec, args.endpoints, salt=k + 1)[victim]
        dt, snap = timed(lambda changed=changed: builder.build(spec, changed))
        assert builder.rebuilt == 1, builder.rebuilt
        sets = changed
        one.append(dt)
        dt, outs = timed(lambda snap=snap: [s.handle_snapshot(snap) for s in sessions])
        fanout.append(dt)
        pushed += sum(len(o.responses) for o in outs)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "models": args.models,
        "endpoints_per_model": args.endpoints,
        "endpoints_total": args.models * args.endpoints,
        "clients": args.clients,
        "full_build_ms": {
            "median": ms(statistics.median(full)),
            "max": ms(max(full)),
            "runs": len(full),
        },
        "one_model_rebuild_ms": {
            "median": ms(statistics.median(one)),
            "max": ms(max(one)),
            "runs": len(one),
        },
        "fanout_to_clients_ms": {"median": ms(statistics.median(fanout)), "max": ms(max(fanout))},
        "responses_per_change": pushed / args.repeat,
        "max_rss_mb": round(rss_mb, 1),
        "targets": {"full_build_ms": 250, "one_model_rebuild_ms": 10, "rss_mb": 200},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "xds_build.json").write_text(json.dumps(result, indent=1) + "\n")
    full_ms = result["full_build_ms"]["median"]
    print(f"full build, {result['endpoints_total']} endpoints: median {full_ms} ms (target <= 250)")
    print(f"one-model rebuild: median {result['one_model_rebuild_ms']['median']} ms (target <= 10)")
    print(
        f"fan-out of one change to {args.clients} SotW sessions: median "
        f"{result['fanout_to_clients_ms']['median']} ms, {result['responses_per_change']} responses"
    )
    print(f"max RSS: {result['max_rss_mb']} MB (target <= 200)")


if __name__ == "__main__":
    main()
