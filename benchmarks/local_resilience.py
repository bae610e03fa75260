"""How fast `caravan up`'s stack recovers from what used to corrupt or orphan it
(issue 17, attacks 8 and 9 and the `caravan up` row), on 127.0.0.1 with the real
Envoy, control plane, tritonserver replicas and Prometheus:

* Envoy SIGKILLed -> a request through Envoy succeeds again (``--kills`` times, at most 3:
  the fourth death within 5 minutes stops the stack by design);
* Prometheus SIGKILLed -> its port answers again;
* disk full (an injected writer failing ENOSPC) while a replica is added -> space back
  -> the registry lists it -> Envoy serves it;
* `caravan up` (the CLI) SIGKILLed -> every process under it gone (PR_SET_PDEATHSIG).

    PYTHONPATH=src .venv/bin/python benchmarks/local_resilience.py [--kills 3]

Prints the figures and writes benchmarks/results/local_resilience.json. Times are
seconds (time.monotonic), one run; the machine's load shows in them.
"""

from __future__ import annotations

import argparse
import errno
import json
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from caravan.atomic_file import atomic_write_text
from caravan.discovery.registry_file import read_registry
from caravan.local.launch import serving_hosts
from caravan.local.process import descendants, free_port, port_open, wait_until
from caravan.local.supervisor import LocalPorts, LocalStack, StackOptions
from caravan.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "local_resilience.json"
MODEL = "alpha"
SPEC = {"models": [{"name": MODEL, "engine": {"model": "a"}, "replicas": {"min": 1, "initial": 1, "max": 3}}]}


class Disk:
    full = False

    def __call__(self, path: Path, text: str) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        atomic_write_text(path, text)


def since(t0: float, pred: Any, what: str, timeout_s: float = 60) -> float:
    return round(wait_until(pred, timeout_s, what, every_s=0.02) - t0, 3)


def infra_kills(stack: LocalStack, kills: int) -> dict[str, Any]:
    envoy = []
    for _ in range(kills):
        victim = stack.infra("envoy")
        t0 = time.monotonic()
        victim.signal(signal.SIGKILL)
        wait_until(lambda v=victim: not v.alive(), 5, "envoy dead")
        envoy.append(since(t0, lambda: stack.probe_envoy(MODEL, 2.0), "a request through the restarted Envoy"))
    victim, t0 = stack.infra("prometheus"), time.monotonic()
    victim.signal(signal.SIGKILL)
    wait_until(lambda: not victim.alive(), 5, "prometheus dead")
    prom = since(t0, lambda: stack.infra("prometheus").pid != victim.pid
                 and port_open("127.0.0.1", stack.ports.prometheus), "prometheus listening again")
    return {"envoy_kill_to_served_s": envoy, "prometheus_kill_to_listening_s": prom}


def full_disk(stack: LocalStack, disk: Disk) -> dict[str, Any]:
    disk.full = True
    stack.scale_to(MODEL, 2)
    wait_until(lambda: stack.counts(MODEL) == (2, 0), 60, "second replica ready")
    held = len(read_registry(stack.registry_path))
    disk.full, t0 = False, time.monotonic()
    listed = since(t0, lambda: len(read_registry(stack.registry_path)) == 2, "registry listing both")
    want = {r.endpoint for r in stack.replicas(MODEL)}
    served = since(t0, lambda: serving_hosts(stack.ports.envoy_admin, f"model-{MODEL}") == want,
                   "Envoy serving both")
    return {"registry_entries_while_full": held, "failed_writes": stack.registry_file.failures,
            "space_back_to_registry_s": listed, "space_back_to_envoy_serving_s": served,
            "watch_errors": stack.watch_errors}


def sigkill_up(tmp: Path) -> dict[str, Any]:
    listen = free_port()
    spec = tmp / "up.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "envoy": {"listen_port": listen, "admin_port": free_port()},
                                    "control_plane": {"xds_port": free_port(), "admin_port": free_port()},
                                    "local": {"time_scale": 0.01, "prometheus_port": free_port(),
                                              "state_dir": str(tmp / "up-state")}}))
    log = tmp / "up.out"
    with log.open("w") as sink:
        up = subprocess.Popen([sys.executable, "-m", "caravan", "up", str(spec), "--no-prometheus"],
                              stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "Caravan is serving" in log.read_text(), 120, "caravan up serving", every_s=0.2)
        family = descendants(up.pid)[1:]
        t0 = time.monotonic()
        up.send_signal(signal.SIGKILL)
        up.wait(5)
        gone = since(t0, lambda: all(_gone(p) for p in family), "every child gone", 30)
        return {"children": len(family), "sigkill_to_all_children_gone_s": gone}
    finally:
        up.kill()
        up.wait(5)


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=3, choices=(1, 2, 3))
    args = ap.parse_args()
    disk = Disk()
    with tempfile.TemporaryDirectory(prefix="caravan-resilience-") as d:
        tmp = Path(d)
        options = StackOptions(time_scale=0.01, prometheus=True, drain_grace_s=0.5)
        with LocalStack(parse_spec(SPEC), tmp / "state", LocalPorts.free(), options, disk) as stack:
            out = {**infra_kills(stack, args.kills), **full_disk(stack, disk)}
        out.update(sigkill_up(tmp))
    out["meta"] = {"machine": f"{platform.machine()} {platform.system()}, Python {platform.python_version()}",
                   "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1))
    for k, v in out.items():
        if k != "meta":
            print(f"{k:36} {v}")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
