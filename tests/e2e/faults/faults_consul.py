"""The Consul-outage fault scenario (test code, also run by ``benchmarks/reliability.py``).

Stack: the Consul fake (``tests/fakes/consul.py``, in this process) -> one
``caravan xds --consul`` subprocess -> a real Envoy -> three real replicas (two
registered, one spare). Built from the Consul e2e helpers in
``tests/e2e/consul/consul_e2e_stack.py`` (imported read-only).

The outage: the fake stops listening (connections refused, blocked queries dropped)
for ``outage_s`` seconds while unary load runs through Envoy; then it comes back on
the same port with its state, and the spare is registered at once. Promise: zero
failed requests; the spare reaches Envoy's cluster within 1 s of its registration.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

CONSUL_E2E = Path(__file__).resolve().parents[1] / "consul"
if str(CONSUL_E2E) not in sys.path:
    sys.path.insert(0, str(CONSUL_E2E))

from consul_e2e_stack import (  # noqa: E402
    ConsulFake,
    make_spec,
    register,
    start_control_plane,
    start_envoy,
    start_replica,
    wait_ready,
    write_spec,
)
from faults_load import UnaryLoad  # noqa: E402
from faults_scenarios import FaultOutcome  # noqa: E402
from faults_stack import envoy_hosts, serving_hosts, wait_until  # noqa: E402

from caravan.local.health import grpc_serving  # noqa: E402
from caravan.local.process import ChildProcess  # noqa: E402

MODEL = "alpha"
CLUSTER = f"model-{MODEL}"
CONVERGE_LIMIT_S = 1.0


def consul_outage(tmp: Path, outage_s: float = 5.0) -> FaultOutcome:
    out = FaultOutcome(f"Consul unavailable for {outage_s:g} s under load",
                       "0 failed requests; a replica registered after Consul returns "
                       "reaches Envoy <= 1 s",
                       recovery="Consul back + spare registered -> spare in Envoy's cluster")
    fake = ConsulFake()
    fake.start()
    procs: list[ChildProcess] = []
    try:
        spec = make_spec(fake.address, (MODEL,))
        spec_path = write_spec(spec, tmp / "spec.yaml")
        reps = [start_replica(tmp, MODEL, f"{MODEL}-{i}") for i in range(3)]
        procs += [r.proc for r in reps]
        cp = start_control_plane(tmp, spec_path, "cp", spec.control_plane.xds_port,
                                 spec.control_plane.admin_port)
        procs.append(cp.proc)
        for r in reps:
            wait_until(lambda r=r: grpc_serving(r.endpoint), 30, f"{r.id} serving")
        for r in reps[:2]:
            register(fake, r)
        wait_ready(cp)
        admin = spec.envoy.admin_port
        procs.append(start_envoy(tmp, spec, [("127.0.0.1", cp.xds_port)], "faults-consul"))
        base = {r.endpoint for r in reps[:2]}
        wait_until(lambda: serving_hosts(admin, CLUSTER) == base, 30, "Envoy serving")
        url = f"127.0.0.1:{spec.envoy.listen_port}"
        load = UnaryLoad(url, MODEL, workers=3, max_s=outage_s + 60).start()
        try:
            load.wait_for(20)
            errors0 = cp.metric("caravan_discovery_errors_total")
            stopped = time.monotonic()
            fake.stop()
            time.sleep(outage_s)
            noticed = cp.metric("caravan_discovery_errors_total") - errors0
            ready_during = cp.ready()
            during = load.count()
            fake.start()
            registered = time.monotonic()
            register(fake, reps[2])
            arrived = wait_until(lambda: reps[2].endpoint in envoy_hosts(admin, CLUSTER),
                                 60, "spare in Envoy's cluster")
            serving = wait_until(lambda: reps[2].endpoint in serving_hosts(admin, CLUSTER),
                                 30, "spare healthy in Envoy")
            load.wait_for(load.count() + 20)
        finally:
            results = load.stop()
    finally:
        for p in reversed(procs):
            p.stop()
        fake.stop()
    out.add_load(results)
    out.recovery_s = round(arrived - registered, 3)
    out.details.update(outage_s=round(registered - stopped, 3),
                       failed_consul_queries=noticed, control_plane_ready_during=ready_during,
                       requests_during_outage=sum(1 for r in results
                                                  if stopped <= r.ended <= registered),
                       requests_before_restart=during,
                       registered_to_healthy_s=round(serving - registered, 3))
    if out.recovery_s > CONVERGE_LIMIT_S:
        out.violations.append(f"the spare reached Envoy {out.recovery_s} s after Consul "
                              f"returned (> {CONVERGE_LIMIT_S} s)")
    if not ready_during:
        out.violations.append("the control plane was not ready during the outage")
    return out
