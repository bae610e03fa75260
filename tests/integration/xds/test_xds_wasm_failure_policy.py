"""Caravan's proxy-wasm filters use ``failure_policy: FAIL_RELOAD``
(``caravan.xds.wasm_filter.FAILURE_POLICY``), on the real Envoy: after a VM trapped,
later requests get a new VM, where Envoy's default (FAIL_CLOSED) fails them all.

The module is ``wasm_trap.c`` (beside this file): it traps in ``on_request_headers`` on
``x-caravan-trap: 1`` and lets every other request continue. It is compiled by
``caravan.wasm.build`` and configured by ``wasm_http_filter``, as Caravan's filters
are, and run by one Envoy (one worker) with two listeners that differ only in the
policy, each answering 200 ``ok`` itself (no upstream: a 503 can only be the filter's).
The filter reaches Envoy in a static bootstrap rather than over LDS; the VM's failure
handling is the same for both.

What Envoy 1.40 does (``source/extensions/common/wasm/wasm.cc`` and ``context.cc``, read
in a stored Envoy-derived tree, not at the 1.40 tag; the binary's
``wasm.<plugin>.vm_reload_success`` / ``vm_reload_backoff`` counters, asserted below,
show the same logic):

* a trap marks the VM failed (``FailState::RuntimeError``) and the request fails with a
  local reply 503 (``Context::failStream``: details ``wasm_fail_stream``, gRPC
  UNAVAILABLE);
* ``PluginConfig::createContext``: a request that meets a failed VM gets an empty
  Context and fails the same way -- under FAIL_CLOSED for good;
* ``PluginConfig::maybeReloadHandleIfNeeded``: under FAIL_RELOAD (and only after a
  runtime error) a request gets a new VM (``getOrCreateThreadLocalPlugin``) when it
  comes at least a backoff after the worker's VM was last (re)loaded; earlier ones fail
  as under FAIL_CLOSED. The backoff (``JitteredLowerBoundBackOffStrategy``) is drawn per
  request in [base, 1.5 x base), base = ``reload_config.backoff.base_interval``, default
  1 s, which Caravan keeps. So the request after a trap succeeds when the VM had run
  for 1.5 s or more, and a VM that traps right after its reload fails the requests of
  the next 1 to 1.5 s.

Test time: about 3 s (Envoy, then waits for the first backoff and for one reload).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from envoy.extensions.wasm.v3 import wasm_pb2
from google.protobuf import json_format

from caravan.local.launch import Launcher, http_get, wait_until
from caravan.local.process import free_port, port_open
from caravan.wasm import build
from caravan.xds.wasm_filter import FAILURE_POLICY, wasm_http_filter

pytestmark = pytest.mark.integration

TRAP_SOURCE = Path(__file__).with_name("wasm_trap.c")
TRAP = {"x-caravan-trap": "1"}
BACKOFF_BASE_S = 1.0  # Envoy's default reload_config.backoff.base_interval
BACKOFF_MAX_S = 1.5 * BACKOFF_BASE_S
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


class TrapEnvoy:
    """The Envoy under test: its admin port, its listener port per failure policy, and for
    each listener an upper bound of when its worker's VM was last (re)loaded. Tests share
    it in any order. Not thread-safe."""

    def __init__(self, admin: int, ports: dict[int, int]) -> None:
        self.admin = admin
        self.ports = ports
        self._loaded = {port: time.monotonic() for port in ports.values()}
        self._failed = dict.fromkeys(ports.values(), False)

    def request(self, port: int, *, trap: bool = False) -> int:
        """One GET through ``port`` (with ``x-caravan-trap: 1`` when ``trap``): its status."""
        status = _status(port, TRAP if trap else None)
        if self._failed[port]:  # the request met a failed VM: it may have loaded a new one
            self._loaded[port] = time.monotonic()
        self._failed[port] = status == 503
        return status

    def wait_past_backoff(self, port: int) -> None:
        """Until the VM behind ``port`` has run longer than any reload backoff."""
        time.sleep(max(0.0, self._loaded[port] + BACKOFF_MAX_S + 0.1 - time.monotonic()))

    def reload_stats(self, policy: int) -> dict[str, int]:
        """Envoy's ``wasm.<plugin>.vm_reload*`` counters of the plugin under ``policy``."""
        prefix = f"wasm.trap-{_name(policy)}."
        _, text = http_get(self.admin, f"/stats?filter=^{prefix}")
        return {k.removeprefix(prefix): int(v) for k, _, v in (line.partition(": ") for line in text.splitlines())}


def _name(policy: int) -> str:
    return wasm_pb2.FailurePolicy.Name(policy).lower()


def _listener(policy: int, port: int, code: bytes) -> dict[str, object]:
    name = _name(policy)
    trap = wasm_http_filter("caravan.test_trap", f"trap-{name}", "wasm_trap", "", code=code,
                            failure_policy=policy)
    ok = {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}
    hcm = {"@type": HCM, "stat_prefix": name,
           "route_config": {"name": name, "virtual_hosts": [{"name": name, "domains": ["*"], "routes": [ok]}]},
           "http_filters": [json_format.MessageToDict(trap, preserving_proto_field_name=True),
                            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}]}
    return {"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}]}


@pytest.fixture(scope="module")
def envoy(module_launcher: Launcher) -> TrapEnvoy:
    code = build.module_bytes("wasm_trap", TRAP_SOURCE)
    ports = {policy: free_port() for policy in (FAILURE_POLICY, wasm_pb2.FAIL_CLOSED)}
    admin = free_port()
    config = module_launcher.state_dir / "envoy-wasm-trap.json"
    config.write_text(json.dumps({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [_listener(p, port, code) for p, port in ports.items()]},
    }))
    module_launcher.envoy_config(config, admin, name="envoy-wasm-trap")
    wait_until(lambda: all(port_open("127.0.0.1", p) for p in ports.values()), 10, "the trap listeners")
    # a request answered through a listener ran in its worker's VM: loaded by then
    assert [_status(port) for port in ports.values()] == [200, 200]
    return TrapEnvoy(admin, ports)


def _status(port: int, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_caravan_filters_reload_a_trapped_vm_for_the_next_request(envoy: TrapEnvoy) -> None:
    assert FAILURE_POLICY == wasm_pb2.FAIL_RELOAD
    port = envoy.ports[FAILURE_POLICY]
    envoy.wait_past_backoff(port)
    before = envoy.reload_stats(FAILURE_POLICY)
    assert envoy.request(port, trap=True) == 503, "the trapping request fails"
    reloaded = time.monotonic()  # at or before the reload
    assert envoy.request(port) == 200, "the next request runs in a new VM"
    assert envoy.request(port) == 200
    # trap the new VM at once: requests fail until a backoff after its load has passed
    assert envoy.request(port, trap=True) == 503
    assert envoy.request(port) == 503, "within a backoff of the reload: no new VM yet"
    deadline = reloaded + BACKOFF_MAX_S + 2.0
    while envoy.request(port) != 200:
        assert time.monotonic() < deadline, "no new VM after the reload backoff"
        time.sleep(0.05)
    assert time.monotonic() - reloaded >= BACKOFF_BASE_S, "no new VM before the backoff's lower bound"
    after = envoy.reload_stats(FAILURE_POLICY)
    assert after["vm_reload_success"] - before["vm_reload_success"] == 2
    assert after["vm_reload_backoff"] > before["vm_reload_backoff"]


def test_under_envoys_default_fail_closed_a_trapped_vm_fails_every_later_request(envoy: TrapEnvoy) -> None:
    port = envoy.ports[wasm_pb2.FAIL_CLOSED]
    envoy.wait_past_backoff(port)  # where FAIL_RELOAD would give the next request a new VM
    assert envoy.request(port, trap=True) == 503
    assert [envoy.request(port) for _ in range(3)] == [503] * 3
    assert envoy.reload_stats(wasm_pb2.FAIL_CLOSED)["vm_reload_success"] == 0
