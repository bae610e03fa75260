"""Per-inference rate limits (issue 17, attack 3): what the limit costs and what it holds.

    .venv/bin/python benchmarks/inference_limit.py [--rounds 3] [--requests 1000] [--flood-s 10]

One run, real parts on 127.0.0.1: two tritonserver replicas over mTLS (model ``fixed``:
every answer after exactly 1 ms x its output tokens, 10-190, so latency differences are
the proxy's; model ``sim``: the batching simulator at ``--time-scale``, where load
queues), and two Envoys (``--concurrency 2``), each fed by its own in-process control
plane over xDS mTLS with API keys:

* arm ``limits``: every client has a rate limit (``bench`` and ``good`` 1,000,000
  req/s, so the filters count every request but never refuse; ``flood`` RATE req/s with
  BURST): ``local_ratelimit`` per stream plus the inference-limit wasm filter;
* arm ``none``: the same keys, no rate limit (neither filter).

1. Cost. ``caravan bench --no-stream --concurrency 50`` through each arm (same seeded
   requests), the arms one after the other, the order alternating over ``--rounds``
   rounds (run at the same time they saturate this 2-core box): each arm's p50/p99
   and the per-request added latency (same request index, limits minus none; p50 and
   p99), medians over rounds.
2. Flood (model ``sim``). ``good`` sends one request per stream, one after the other:
   unloaded first, then for ``--flood-s`` seconds while ``flood`` sends streams of 250
   long requests (max_tokens 200) on one stream, again and again, and streams of 3
   requests on fresh connections, again and again (``--flood-pause-s`` apart; each
   flood in its own process, so it never shares the timing client's GIL). Reported: ``flood``'s answers
   against BURST + RATE x t and how its streams ended, and ``good``'s p50/p99 against
   its unloaded values (target: p99 within 2x). Then, for the record, one stream of 250
   long requests on arm ``none`` (no limit), with ``good``'s latency meanwhile.

Prints the figures, writes benchmarks/results/inference_limit.json.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# This process runs gRPC servers and clients in threads and forks children meanwhile;
# gRPC's fork handlers then abort children (ev_epoll1 "next_worker->state == KICKED").
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration" / "security"))

import sec_flood  # noqa: E402
from sec_pki import Pki, make_pki  # noqa: E402
from sec_stack import ThreadedControlPlane, admin_get  # noqa: E402

from caravan.bench.results import SweepResult, read_json  # noqa: E402
from caravan.bench.stats import percentile  # noqa: E402
from caravan.discovery.registry_file import write_registry  # noqa: E402
from caravan.local.launch import Launcher, wait_until, write_envoy_bootstrap  # noqa: E402
from caravan.local.process import ChildProcess, caravan_argv, free_port  # noqa: E402
from caravan.spec import PlatformSpec, parse_spec  # noqa: E402
from caravan.triton.launcher import ReplicaOptions, ServerTls  # noqa: E402
from caravan.xds.inference_limit import REFUSED_STAT  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
KEYS = {"bench": "bench-key-0123456789abcdef", "good": "good-key-0123456789abcdef",
        "flood": "flood-key-0123456789abcdef"}
RATE, BURST = 0.5, 3
HUGE = {"requests_per_s": 1_000_000, "burst": 1_000_000}
MODEL_HEADER = "x-model"
WARMUP = 50


def spec(tmp: Path, pki: Pki, limits: bool) -> PlatformSpec:
    keys = tmp / "api-keys.txt"
    keys.write_text("".join(f"{c}: {k}\n" for c, k in KEYS.items()))
    api_keys: dict[str, Any] = {"file": str(keys)}
    if limits:
        api_keys.update(rate_limit=HUGE,
                        client_limits={"flood": {"requests_per_s": RATE, "burst": BURST}})
    return parse_spec({
        "models": [{"name": m, "engine": {"model": f"m/{m}"},
                    "routing": {"maglev_table_size": 1031, "retries": 0}} for m in ("fixed", "sim")],
        "envoy": {"listen_port": free_port(), "admin_port": free_port(), "model_header": MODEL_HEADER},
        "control_plane": {"xds_port": free_port(), "admin_port": free_port(),
                          "debounce_quiet_ms": 10, "debounce_max_ms": 100},
        "security": {
            "xds_tls": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key),
                        "ca_file": str(pki.ca), "client_ca_file": str(pki.ca),
                        "client_cert_file": str(pki.client_cert), "client_key_file": str(pki.client_key)},
            "upstream_tls": {"ca_file": str(pki.ca), "cert_file": str(pki.client_cert),
                             "key_file": str(pki.client_key)},
            "api_keys": api_keys,
        },
    })


def start(tmp: Path, pki: Pki, time_scale: float, launcher: Launcher,
          planes: list[ThreadedControlPlane], envoys: dict[str, int]) -> dict[str, PlatformSpec]:
    """Replicas of ``fixed`` and ``sim``, then per arm a control plane and an Envoy (its
    pid into ``envoys``)."""
    tls = ServerTls(pki.server_cert, pki.server_key, pki.ca)
    specs = {"limits": spec(tmp, pki, True), "none": spec(tmp, pki, False)}
    fixed = launcher.replicas(["fixed-0"], specs["none"].models[0],
                              ReplicaOptions(fixed_ms_per_token=1.0, exit_timeout_s=5, tls=tls))
    sim = launcher.replicas(["sim-0"], specs["none"].models[1],
                            ReplicaOptions(time_scale=time_scale, exit_timeout_s=5, tls=tls))
    registry = tmp / "registry.json"
    write_registry(registry, [m.registration() for m in fixed + sim])
    for arm, s in specs.items():
        cp = ThreadedControlPlane(s, registry, os.environ)
        planes.append(cp)
        config = write_envoy_bootstrap(tmp / f"envoy-{arm}.yaml", s, [("127.0.0.1", cp.cp.port)],
                                       node_id=f"envoy-{arm}")
        envoy = launcher.envoy_config(config, s.envoy.admin_port, name=f"envoy-{arm}", concurrency=2)
        envoys[arm] = envoy.pid
    for s in specs.values():
        admin = s.envoy.admin_port
        wait_until(lambda a=admin: all(f"model-{m}::" in admin_get(a, "/clusters") and "healthy"
                                       in admin_get(a, "/clusters") for m in ("fixed", "sim")),
                   30, "healthy replicas")
    return specs


# --------------------------------------------------------------------------- 1. cost


def bench_once(url: str, model: str, requests: int, tmp: Path, key: str = "bench",
               key_header: str = "x-api-key") -> SweepResult:
    """``caravan bench --no-stream --concurrency 50`` (``requests`` measured after 50
    warm-up requests; same seeded requests every call) with ``KEYS[key]`` (or ``key``
    itself when not a known client) in ``key_header``; its result."""
    key_file = tmp / "bench.key"
    key_file.write_text(KEYS.get(key, key) + "\n")
    out = Path(tempfile.mkdtemp(dir=tmp))
    argv = caravan_argv(
        "bench", "--url", url, "--model", model, "--no-stream", "--concurrency", "50",
        "--requests", str(requests), "--warmup", str(WARMUP), "--input-tokens", "16",
        "--output-tokens", "100", "--output-spread", "0.9", "--seed", "3",
        "--api-key-file", str(key_file), "--api-key-header", key_header, "--no-progress",
        "--no-plot", "--out", str(out))
    with ChildProcess("bench", argv, out / "bench.log") as proc:
        code = proc.proc.wait(timeout=600) if proc.proc is not None else -1
    if code != 0:
        raise SystemExit(f"caravan bench exited {code}: {(out / 'bench.log').read_text()[-2000:]}")
    return read_json(out / "bench.json")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cost(urls: dict[str, str], envoys: dict[str, int], args: argparse.Namespace,
         tmp: Path) -> dict[str, Any]:
    """``--rounds`` rounds, the arms one after the other (order alternating per round);
    latency per arm and per request, and Envoy's CPU per request (less sensitive to a
    busy machine than latency)."""
    rounds = []
    for rnd in range(args.rounds):
        order = ["limits", "none"] if rnd % 2 == 0 else ["none", "limits"]
        got, cpu = {}, {}
        for arm in order:
            before = cpu_s(envoys[arm])
            got[arm] = bench_once(urls[arm], "fixed", args.requests, tmp)
            cpu[arm] = (cpu_s(envoys[arm]) - before) * 1e6 / (args.requests + WARMUP)
        level = {arm: r.levels[0] for arm, r in got.items()}
        for arm, lv in level.items():
            if lv.summary.error_count:
                raise SystemExit(f"{arm}: errors {lv.summary.errors}")
        e2e = {arm: {r.index: r.e2e_ms for r in lv.records} for arm, lv in level.items()}
        diffs = [e2e["limits"][i] - e2e["none"][i] for i in e2e["limits"].keys() & e2e["none"].keys()]
        row = {**{f"{arm}_{q}_ms": getattr(lv.summary.e2e, attr) for arm, lv in level.items()
                  for q, attr in (("p50", "median"), ("p99", "p99"))},
               "added_p50_ms": percentile(diffs, 50), "added_p99_ms": percentile(diffs, 99),
               **{f"{arm}_envoy_cpu_us_per_request": v for arm, v in cpu.items()}}
        print(f"  round {rnd}: " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
        rounds.append(row)
    return {"medians": {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}, "rounds": rounds}


# --------------------------------------------------------------------------- 2. flood


def headers(client: str) -> dict[str, str]:
    return {**sec_flood.api_key(KEYS[client]), MODEL_HEADER: "sim"}


def good_latencies(url: str, n: int, until: float | None = None) -> dict[str, Any]:
    got = sec_flood.timed_requests(url, headers("good"), n, pause_s=0.05, until=until, model="sim")
    ms = [s * 1000 for status, s in got if status == "OK"]
    return {"requests": len(got), "ok": len(ms), "p50_ms": percentile(ms, 50),
            "p99_ms": percentile(ms, 99), "max_ms": max(ms)}


def flood_loop(url: str, seconds: float, per_stream: int, pause_s: float) -> list[dict[str, Any]]:
    """``flood``'s streams of ``per_stream`` long requests, one after the other
    (``pause_s`` apart), for ``seconds``; their outcomes."""
    stop, out = time.monotonic() + seconds, []
    while time.monotonic() < stop:
        o = sec_flood.one_stream(url, headers("flood"), per_stream, timeout_s=15, max_tokens=200,
                                 model="sim")
        out.append(dataclasses.asdict(o))
        time.sleep(pause_s)
    return out


def flood_child(url: str, seconds: float, per_stream: int, pause_s: float,
                out: Path) -> subprocess.Popen[bytes]:
    """``flood_loop`` in its own process (so its client threads never share the timing
    client's GIL), writing the outcomes as JSON to ``out``."""
    argv = [sys.executable, __file__, "--flood-child", url, str(seconds), str(per_stream),
            str(pause_s), str(out)]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def flood_while_timing(url: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Two flood processes (250 requests per stream; 3 per stream on fresh connections)
    while ``good`` times its requests; the flood's answers against the bound."""
    files = [tmp / f"flood-{n}.json" for n in (250, 3)]
    procs = [flood_child(url, args.flood_s, n, args.flood_pause_s, f) for n, f in zip((250, 3), files, strict=True)]
    try:
        time.sleep(0.5)  # the floods are under way
        good = good_latencies(url, 10_000, until=time.monotonic() + args.flood_s - 0.5)
        for p in procs:
            p.wait(timeout=args.flood_s + 60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    outcomes = [sec_flood.StreamOutcome(**o) for f in files for o in json.loads(f.read_text())]
    span = max(o.ended for o in outcomes) - min(o.started for o in outcomes)
    return {"good": good, "flood_streams": len(outcomes),
            "flood_answered": sum(o.answered for o in outcomes),
            "flood_allowed": BURST + RATE * span, "flood_span_s": span,
            "flood_stream_endings": dict(collections.Counter(o.status for o in outcomes))}


def unlimited_flood(url: str, goods: int) -> dict[str, Any]:
    """One stream of 250 long requests on the arm without limits, ``good`` meanwhile."""
    box: list[sec_flood.StreamOutcome] = []
    t = threading.Thread(target=lambda: box.append(sec_flood.one_stream(
        url, headers("flood"), 250, timeout_s=60, max_tokens=200, model="sim")), daemon=True)
    t.start()
    time.sleep(0.2)
    good = good_latencies(url, goods, until=time.monotonic() + 60)
    t.join(70)
    return {"good": good, "flood_answered": box[0].answered if box else None,
            "flood_seconds": box[0].ended - box[0].started if box else None}


def refused(admin: int) -> int:
    lines = [ln for ln in admin_get(admin, "/stats").splitlines() if ln.startswith(REFUSED_STAT + ":")]
    return int(lines[0].split(":")[1]) if lines else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--flood-s", type=float, default=10.0)
    ap.add_argument("--goods", type=int, default=60, help="well-behaved requests per phase")
    ap.add_argument("--flood-pause-s", type=float, default=0.2, help="pause between flood streams")
    ap.add_argument("--time-scale", type=float, default=1.0, help="model sim's simulator time scale")
    if sys.argv[1:2] == ["--flood-child"]:
        url, seconds, per_stream, pause, path = sys.argv[2:7]
        Path(path).write_text(json.dumps(flood_loop(url, float(seconds), int(per_stream), float(pause))))
        return
    args = ap.parse_args()
    out: dict[str, Any] = {"limit": {"requests_per_s": RATE, "burst": BURST}, "args": vars(args)}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        launcher, planes, envoys = Launcher(tmp), [], {}
        try:
            specs = start(tmp, make_pki(tmp / "pki"), args.time_scale, launcher, planes, envoys)
            urls = {arm: f"127.0.0.1:{s.envoy.listen_port}" for arm, s in specs.items()}
            print("1. cost at concurrency 50 (limits vs none, same requests)", flush=True)
            out["load_average_before"] = os.getloadavg()
            out["cost_c50"] = cost(urls, envoys, args, tmp)
            print("2. flood", flush=True)
            out["unloaded"] = good_latencies(urls["limits"], args.goods)
            out["flood"] = flood_while_timing(urls["limits"], args, tmp)
            out["flood"]["refused_streams_stat"] = refused(specs["limits"].envoy.admin_port)
            out["flood"]["good_p99_ratio"] = out["flood"]["good"]["p99_ms"] / out["unloaded"]["p99_ms"]
            out["unlimited_flood"] = unlimited_flood(urls["none"], args.goods)
        finally:
            for cp in planes:
                cp.stop()
            launcher.stop()
    report(out)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "inference_limit.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS / 'inference_limit.json'}")


def report(out: dict[str, Any]) -> None:
    c, f, u, n = out["cost_c50"]["medians"], out["flood"], out["unloaded"], out["unlimited_flood"]
    print(f"cost at c=50: p50 {c['none_p50_ms']:.2f} -> {c['limits_p50_ms']:.2f} ms, p99 "
          f"{c['none_p99_ms']:.2f} -> {c['limits_p99_ms']:.2f} ms; per request added "
          f"p50 {c['added_p50_ms']:.3f} ms, p99 {c['added_p99_ms']:.3f} ms (medians of rounds); Envoy CPU "
          f"per request {c['none_envoy_cpu_us_per_request']:.0f} -> {c['limits_envoy_cpu_us_per_request']:.0f} us; "
          f"load average {out['load_average_before'][0]:.1f}")
    held = f["flood_answered"] <= f["flood_allowed"] + 1
    print(f"flood ({RATE} req/s, burst {BURST}): {f['flood_answered']} answered over "
          f"{f['flood_span_s']:.1f} s in {f['flood_streams']} streams, allowed "
          f"{f['flood_allowed']:.1f}: {'held' if held else 'NOT HELD'}; endings {f['flood_stream_endings']}")
    ok = f["good_p99_ratio"] <= 2.0
    print(f"good client: unloaded p50 {u['p50_ms']:.1f} / p99 {u['p99_ms']:.1f} ms; during the flood "
          f"p50 {f['good']['p50_ms']:.1f} / p99 {f['good']['p99_ms']:.1f} ms "
          f"({f['good_p99_ratio']:.2f}x: {'within' if ok else 'NOT within'} 2x), "
          f"{f['good']['ok']}/{f['good']['requests']} ok")
    print(f"without limits, one stream of 250 long requests: {n['flood_answered']} answered in "
          f"{n['flood_seconds']:.1f} s; good p99 {n['good']['p99_ms']:.1f} ms, max {n['good']['max_ms']:.1f} ms")


if __name__ == "__main__":
    main()
