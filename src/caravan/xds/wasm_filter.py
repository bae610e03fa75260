"""Caravan's proxy-wasm filters as Envoy HTTP filters (pure, given the module bytes).

One way to configure them (``wasm_http_filter``): the V8 runtime, the module compiled by
``caravan.wasm.build`` sent inline over xDS, the filter's configuration as a string, and
``FAILURE_POLICY``. A VM that traps (a runtime error) fails the request it was running
(Envoy's local reply 503, gRPC UNAVAILABLE). Envoy's default (FAIL_CLOSED) then fails
every later request on that worker too, so one bad input would turn a routing helper or
a rate limit into an outage. Under FAIL_RELOAD the first request that comes at least a
reload backoff after the worker's VM was last (re)loaded gets a new VM; requests before
that fail like the trapping one. The backoff is drawn per request in [1, 1.5) s (Envoy's
default ``reload_config``, kept here), so after a VM that had run for 1.5 s or more
traps, the next request succeeds (Envoy 1.40, ``source/extensions/common/wasm/wasm.cc``,
``PluginConfig::maybeReloadHandleIfNeeded``; ``envoy/extensions/wasm/v3/wasm.proto``,
``FailurePolicy``). The rate limit's buckets live in process-wide shared data, outside
the VM, so a reload keeps them. Tested with a module that traps on demand on the real
Envoy: ``tests/integration/xds/test_xds_wasm_failure_policy.py``.
"""

from __future__ import annotations

from envoy.extensions.filters.http.wasm.v3 import wasm_pb2 as wasm_filter_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.wasm.v3 import wasm_pb2
from google.protobuf import any_pb2, wrappers_pb2

from caravan.wasm import build

RUNTIME = "envoy.wasm.runtime.v8"
FAILURE_POLICY = wasm_pb2.FAIL_RELOAD
# The KServe v2 inference methods' gRPC :path (what the filters act on).
INFERENCE_PATHS = (
    "/inference.GRPCInferenceService/ModelInfer",
    "/inference.GRPCInferenceService/ModelStreamInfer",
)


def wasm_http_filter(name: str, vm_id: str, module: str, configuration: str, *,
                     code: bytes | None = None, hold_headers: bool = False,
                     failure_policy: int = FAILURE_POLICY) -> hcm_pb2.HttpFilter:
    """``envoy.filters.http.wasm`` named ``name`` running ``caravan/wasm/<module>.c`` in
    VM ``vm_id`` with ``configuration``. ``code``: the module bytes (default:
    ``build.module_bytes(module)``, compiled once per machine). ``hold_headers``: the
    filter may stop the request headers and still be given the body (Envoy otherwise turns
    a headers StopIteration into StopAllIteration). ``failure_policy``: a
    ``wasm_pb2.FailurePolicy`` (Caravan's filters use ``FAILURE_POLICY``; tests set another
    to show the difference). Raises WasmBuildError from the build."""
    vm = wasm_pb2.VmConfig(vm_id=vm_id, runtime=RUNTIME)
    vm.code.local.inline_bytes = build.module_bytes(module) if code is None else code
    plugin = wasm_pb2.PluginConfig(name=vm_id, vm_config=vm, failure_policy=failure_policy)
    if hold_headers:
        plugin.allow_on_headers_stop_iteration.value = True
    plugin.configuration.Pack(wrappers_pb2.StringValue(value=configuration))
    typed = any_pb2.Any()
    typed.Pack(wasm_filter_pb2.Wasm(config=plugin), deterministic=True)
    return hcm_pb2.HttpFilter(name=name, typed_config=typed)
