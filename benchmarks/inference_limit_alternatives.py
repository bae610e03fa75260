"""Per-inference limits: the proxy-wasm filter against a Lua filter doing the same count,
on the real Envoy 1.40 (why Caravan uses proxy-wasm; docs/security.md, attack 3).

    .venv/bin/python benchmarks/inference_limit_alternatives.py [--requests 3000] [--rounds 3]

One tritonserver replica (plaintext; every answer after 1 ms x its 10-190 output tokens)
behind one Envoy (``--concurrency 2``) with a static bootstrap and three listeners:

* ``plain``: the router only;
* ``lua``: ``envoy.filters.http.lua`` counting the 5-byte gRPC frame headers with
  ``bodyChunks()``, one token bucket per client in a Lua table (Lua state is per worker:
  Envoy has no global Lua data), ``respond()`` with grpc-status 8 when empty;
* ``wasm``: Caravan's filter (``caravan/wasm/ratelimit.c``), buckets in shared data.

The client names itself in ``x-caravan-client`` (no authentication here). Measured:

1. Does the limit hold across workers? Client ``flood`` (0.5 req/s, burst 3) opens 12
   streams of 3 requests, each on its own connection (Envoy spreads them over its two
   workers): answers against burst + rate x t; and what the client sees when 200
   requests arrive on one stream. (Seen on Envoy 1.40: Lua's ``respond()`` fails once
   ``bodyChunks()`` has let the headers through, "respond() cannot be called if headers
   have been continued", so the script errors and the stream goes on: counted in the
   JSON as ``respond_refused_in_log``.)
2. Cost: ``caravan bench --no-stream --concurrency 50`` (client ``bench``, never
   limited but counted) through each listener in turn, rounds alternating the order:
   p50/p99 and Envoy's CPU per request (median over rounds).

Prints the figures, writes benchmarks/results/inference_limit_alternatives.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")  # see benchmarks/inference_limit.py
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration" / "security"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import sec_flood  # noqa: E402
from inference_limit import bench_once, cpu_s  # noqa: E402

from caravan.local.launch import Launcher, wait_until  # noqa: E402
from caravan.local.process import free_port  # noqa: E402
from caravan.spec import RateLimit  # noqa: E402
from caravan.triton.launcher import ReplicaOptions  # noqa: E402
from caravan.wasm import build  # noqa: E402
from caravan.xds.inference_limit import MODULE, RUNTIME, plugin_config  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
RATE, BURST = 0.5, 3
HEADER = "x-caravan-client"
LUA_REFUSED = "respond() cannot be called if headers have been continued"
LIMITS = {"flood": RateLimit(requests_per_s=RATE, burst=BURST),
          "bench": RateLimit(requests_per_s=1_000_000, burst=1_000_000)}

LUA = """
local LIMITS = {flood = {%(rate)s, %(burst)s}, bench = {1000000, 1000000}}
local buckets = {}  -- per worker: each Envoy worker runs its own Lua state

local function now_s(h)
  local ok, ms = pcall(function() return h:timestamp() end)
  if ok and ms then return ms / 1000 end
  return os.time()
end

local function take(h, client)
  local lim = LIMITS[client]
  local b = buckets[client]
  local t = now_s(h)
  if b == nil then b = {tokens = lim[2], at = t}; buckets[client] = b end
  b.tokens = math.min(lim[2], b.tokens + (t - b.at) * lim[1]); b.at = t
  if b.tokens < 1 then return false end
  b.tokens = b.tokens - 1
  return true
end

function envoy_on_request(h)
  local client = h:headers():get("%(header)s")
  if client == nil or LIMITS[client] == nil then return end
  local seen, length, left = 0, 0, 0
  for chunk in h:bodyChunks() do
    local n = chunk:length()
    local bytes = chunk:getBytes(0, n)
    local i = 1
    while i <= n do
      if left > 0 then
        local step = math.min(left, n - i + 1); left = left - step; i = i + step
      else
        if seen == 0 and not take(h, client) then
          h:respond({[":status"] = "429", ["grpc-status"] = "8",
                     ["grpc-message"] = "lua: over the inference rate limit"}, "")
          return
        end
        if seen >= 1 then length = length * 256 + string.byte(bytes, i) end
        seen = seen + 1; i = i + 1
        if seen == 5 then left = length; seen = 0; length = 0 end
      end
    end
  end
end
"""


def _pack(type_url: str, **fields: Any) -> dict[str, Any]:
    return {"@type": type_url, **fields}


def filters(arm: str, wasm_file: Path) -> list[dict[str, Any]]:
    router = {"name": "envoy.filters.http.router", "typed_config": _pack(
        "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router")}
    if arm == "lua":
        code = LUA % {"rate": RATE, "burst": BURST, "header": HEADER}
        return [{"name": "envoy.filters.http.lua", "typed_config": _pack(
            "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            default_source_code={"inline_string": code})}, router]
    if arm == "wasm":
        config = _pack("type.googleapis.com/google.protobuf.StringValue",
                       value=plugin_config(HEADER, LIMITS, None))
        plugin = {"name": "alt", "root_id": "", "configuration": config, "vm_config": {
            "vm_id": "alt", "runtime": RUNTIME, "code": {"local": {"filename": str(wasm_file)}}}}
        return [{"name": "envoy.filters.http.wasm", "typed_config": _pack(
            "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm", config=plugin)}, router]
    return [router]


def listener(arm: str, port: int, wasm_file: Path) -> dict[str, Any]:
    hcm = _pack("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                ".HttpConnectionManager", stat_prefix=arm, codec_type="HTTP2",
                route_config={"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                    {"match": {"prefix": "/"}, "route": {"cluster": "replica", "timeout": "0s"}}]}]},
                http_filters=filters(arm, wasm_file))
    return {"name": arm, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}]}


def bootstrap(ports: dict[str, int], admin: int, replica: int, wasm_file: Path) -> dict[str, Any]:
    h2 = _pack("type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
               explicit_http_config={"http2_protocol_options": {}})
    cluster = {"name": "replica", "type": "STATIC", "connect_timeout": "1s",
               "typed_extension_protocol_options": {
                   "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": h2},
               "load_assignment": {"cluster_name": "replica", "endpoints": [{"lb_endpoints": [
                   {"endpoint": {"address": {"socket_address": {
                       "address": "127.0.0.1", "port_value": replica}}}}]}]}}
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
            "static_resources": {"listeners": [listener(a, p, wasm_file) for a, p in ports.items()],
                                 "clusters": [cluster]}}


def holds(url: str) -> dict[str, Any]:
    """12 streams of 3 on fresh connections, then 200 requests on one stream (fresh bucket:
    the caller waits BURST / RATE first)."""
    flood = {HEADER: "flood"}  # no authentication here: the client names itself
    wait_until(lambda: sec_flood.one_stream(url, {HEADER: "nobody"}, 1).status == "OK", 20,
               f"an unlimited request through {url}")  # the listener is up, the path works
    outcomes = sec_flood.many_streams(url, flood, streams=12, per_stream=3)
    answered = sum(o.answered for o in outcomes)
    allowed = sec_flood.allowed(BURST, RATE, outcomes) - 1
    time.sleep(BURST / RATE + 0.5)
    one = sec_flood.one_stream(url, flood, 200)
    return {"many_streams_answered": answered, "allowed": allowed, "held": answered <= allowed + 1,
            "many_streams_endings": dict(collections.Counter(o.status for o in outcomes)),
            "one_stream": {"answered": one.answered, "status": one.status, "message": one.message}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    arms = ("plain", "lua", "wasm")
    out: dict[str, Any] = {"limit": {"requests_per_s": RATE, "burst": BURST}, "args": vars(args)}
    with tempfile.TemporaryDirectory() as d:
        tmp, launcher = Path(d), Launcher(Path(d))
        try:
            wasm_file = tmp / "ratelimit.wasm"
            wasm_file.write_bytes(build.module_bytes(MODULE))
            replica = launcher.replicas(["r0"], "alpha", ReplicaOptions(fixed_ms_per_token=1.0,
                                                                        exit_timeout_s=5))[0]
            ports, admin = {a: free_port() for a in arms}, free_port()
            config = tmp / "envoy.yaml"
            config.write_text(yaml.safe_dump(bootstrap(ports, admin, replica.port, wasm_file)))
            envoy = launcher.envoy_config(config, admin, concurrency=2)
            urls = {a: f"127.0.0.1:{p}" for a, p in ports.items()}
            out["holds"] = {a: holds(urls[a]) for a in ("lua", "wasm")}
            log = (tmp / "logs" / "envoy.log").read_text()
            out["holds"]["lua"]["respond_refused_in_log"] = log.count(LUA_REFUSED)
            print(json.dumps(out["holds"], indent=1), flush=True)
            rounds = []
            for rnd in range(args.rounds):
                order = arms if rnd % 2 == 0 else tuple(reversed(arms))
                row = {}
                for arm in order:
                    before = cpu_s(envoy.pid)
                    s = bench_once(urls[arm], "alpha", args.requests, tmp, key="bench",
                                   key_header=HEADER).levels[0].summary
                    row[arm] = {"p50_ms": s.e2e.median, "p99_ms": s.e2e.p99,
                                "envoy_cpu_us_per_request": (cpu_s(envoy.pid) - before) * 1e6
                                / (args.requests + 50)}
                print(f"  round {rnd}: " + "  ".join(
                    f"{a} p50 {r['p50_ms']:.1f} p99 {r['p99_ms']:.1f} ms cpu {r['envoy_cpu_us_per_request']:.0f} us"
                    for a, r in row.items()), flush=True)
                rounds.append(row)
            out["cost_c50"] = {a: {k: statistics.median(r[a][k] for r in rounds) for k in rounds[0][a]}
                               for a in arms}
            out["rounds"] = rounds
        finally:
            launcher.stop()
    for a, f in out["cost_c50"].items():
        print(f"{a:6s} p50 {f['p50_ms']:.1f} ms  p99 {f['p99_ms']:.1f} ms  Envoy CPU "
              f"{f['envoy_cpu_us_per_request']:.0f} us/request (medians of {args.rounds} rounds)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "inference_limit_alternatives.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS / 'inference_limit_alternatives.json'}")


if __name__ == "__main__":
    main()
