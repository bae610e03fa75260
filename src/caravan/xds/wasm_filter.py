"""Caravan's proxy-wasm filters as Envoy HTTP filters (pure, given the module bytes).

One way to configure them (``wasm_http_filter``): the V8 runtime, the module compiled by
``caravan.wasm.build`` sent inline over xDS, the filter's configuration as a string, and
``FAILURE_POLICY``. Envoy's default (FAIL_CLOSED) fails every later request once a VM has
failed (a trap, out of memory), so one bad input would turn a routing helper or a rate
limit into an outage; FAIL_RELOAD starts a new VM for the next request instead (Envoy:
``envoy/extensions/wasm/v3/wasm.proto``, ``FailurePolicy``; the rate limit's buckets
live in process-wide shared data, outside the VM). Not exercised here with a module
that traps.
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
                     code: bytes | None = None, hold_headers: bool = False) -> hcm_pb2.HttpFilter:
    """``envoy.filters.http.wasm`` named ``name`` running ``caravan/wasm/<module>.c`` in
    VM ``vm_id`` with ``configuration``. ``code``: the module bytes (default:
    ``build.module_bytes(module)``, compiled once per machine). ``hold_headers``: the
    filter may stop the request headers and still be given the body (Envoy otherwise turns
    a headers StopIteration into StopAllIteration). Raises WasmBuildError from the build."""
    vm = wasm_pb2.VmConfig(vm_id=vm_id, runtime=RUNTIME)
    vm.code.local.inline_bytes = build.module_bytes(module) if code is None else code
    plugin = wasm_pb2.PluginConfig(name=vm_id, vm_config=vm, failure_policy=FAILURE_POLICY)
    if hold_headers:
        plugin.allow_on_headers_stop_iteration.value = True
    plugin.configuration.Pack(wrappers_pb2.StringValue(value=configuration))
    typed = any_pb2.Any()
    typed.Pack(wasm_filter_pb2.Wasm(config=plugin), deterministic=True)
    return hcm_pb2.HttpFilter(name=name, typed_config=typed)
