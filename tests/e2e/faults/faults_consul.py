"""The Consul-outage fault scenario (test code; run by ``test_faults.py`` and, at full
duration, by ``benchmarks/reliability.py`` through pytest).

Stack: the Consul fake (``tests/fakes/consul/``, in this process) -> one
``caravan xds --consul`` subprocess -> a real Envoy -> three real replicas
(``tritonserver``; two registered, one spare), all started through
``caravan.local.launch``.

The outage: the fake stops listening (connections refused, blocked queries dropped)
for ``outage_s`` seconds while load runs through Envoy; then it comes back on the same
port with its state, and the spare is registered at once. Promise: zero failed
requests; the spare reaches Envoy's cluster within 1 s of its registration.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from faults_load import RequestLoad
from faults_scenarios import FaultOutcome
from faults_stack import cp_metric, envoy_hosts, serving_hosts, wait_until
from tests.fakes.consul import ConsulFake

from caravan.local.health import infer_once
from caravan.local.launch import Launcher, RunningReplica, control_plane_ready
from caravan.local.process import free_port
from caravan.spec import PlatformSpec, parse_spec
from caravan.triton.launcher import ReplicaOptions

MODEL = "alpha"
CLUSTER = f"model-{MODEL}"
CONVERGE_LIMIT_S = 1.0


def consul_spec(consul_address: str) -> PlatformSpec:
    """Model ``alpha`` on free ports; the control plane watches ``consul_address``."""
    return parse_spec({
        "models": [{"name": MODEL, "engine": {"model": f"m/{MODEL}"},
                    "routing": {"maglev_table_size": 1031, "retries": 1, "unary_timeout_s": 10}}],
        "envoy": {"listen_port": free_port(), "admin_port": free_port()},
        "control_plane": {"xds_port": free_port(), "admin_port": free_port(),
                          "debounce_quiet_ms": 20, "debounce_max_ms": 200},
        "consul": {"address": consul_address, "wait_s": 5, "timeout_s": 2},
    }, "faults-consul")


def register(fake: ConsulFake, r: RunningReplica) -> None:
    """Register ``r`` as Nomad would: service ``triton-<model>``, passing check, meta."""
    fake.register(f"triton-{r.model}", r.id, port=r.port, address="127.0.0.1",
                  meta={"metrics_port": str(r.metrics_port), "model": r.model})


def consul_outage(tmp: Path, outage_s: float = 5.0) -> FaultOutcome:
    out = FaultOutcome(f"Consul unavailable for {outage_s:g} s under load",
                       "0 failed requests; a replica registered after Consul returns "
                       "reaches Envoy <= 1 s",
                       recovery="Consul back + spare registered -> spare in Envoy's cluster")
    fake = ConsulFake()
    fake.start()
    try:
        with Launcher(tmp) as launcher:
            spec = consul_spec(fake.address)
            spec_path = tmp / "spec.yaml"
            spec_path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
            reps = launcher.replicas([f"{MODEL}-{i}" for i in range(3)], MODEL,
                                     ReplicaOptions(time_scale=0.01, stream_interval_ms=0, exit_timeout_s=10))
            for r in reps[:2]:
                register(fake, r)
            admin_cp = spec.control_plane.admin_port
            launcher.control_plane(spec_path, port=spec.control_plane.xds_port, admin_port=admin_cp,
                                   consul=True, node_id="cp", name="cp", ready=True)
            launcher.envoy(spec, [("127.0.0.1", spec.control_plane.xds_port)], node_id="faults-consul")
            admin = spec.envoy.admin_port
            base = {r.endpoint for r in reps[:2]}
            wait_until(lambda: serving_hosts(admin, CLUSTER) == base, 30, "Envoy serving")
            url = f"127.0.0.1:{spec.envoy.listen_port}"
            # The listener (LDS) can follow the cluster: load starts once a request is served.
            wait_until(lambda: infer_once(url, MODEL, model_header=spec.envoy.model_header), 30,
                       "a request served through Envoy's listener")
            load = RequestLoad(url, MODEL, workers=3, max_s=outage_s + 60).start()
            try:
                load.wait_for(20)
                errors0 = cp_metric(admin_cp, "caravan_discovery_errors_total")
                stopped = time.monotonic()
                fake.stop()
                time.sleep(outage_s)
                noticed = cp_metric(admin_cp, "caravan_discovery_errors_total") - errors0
                ready_during = control_plane_ready(admin_cp)
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
