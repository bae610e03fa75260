"""Routing policies as Envoy config (pure): each model's ``routing.policy`` becomes its
cluster's load balancer, its routes' hash policies and, for ``prefix``, two HTTP filters.

* ``session``: Maglev on the session header (bounded by ``hash_balance_factor``); a
  request without the header gets a replica Envoy picks without a key.
* ``prefix``: Maglev with the same bound on the session header when the request has one
  (a terminal hash policy), else on ``PREFIX_KEY_HEADER``, which the listener derives from
  the prompt of the stream's first message (see below). No key: as ``session`` without
  the header.
* ``least_request``, ``round_robin``: Envoy's balancers of those names; no hash.

How the prefix key is made (docs/routing.md has the measurements behind the choice):
the router picks a replica when the request headers reach it, so the key must be a
header before they continue, taken from the first message of a stream that may stay
open for many requests. ``FIELDS_FILTER`` (Envoy's ``grpc_field_extraction``) holds the
headers until the first gRPC message is whole (however many HTTP/2 frames it spans),
writes the text fields below into dynamic metadata and lets the stream go on;
``KEY_FILTER`` (Lua, ``prefix_key.lua``) then hashes the first ``prefix_tokens`` words
of ``text_input`` into ``PREFIX_KEY_HEADER``. Both filters are on the listener and
disabled on every route that is not a prefix model's (the Lua script per route carries
the model's ``prefix_tokens``). ``grpc_field_extraction`` reads only string and numeric
fields, so the descriptor set Envoy gets declares the two BYTES fields (``raw_input_contents``,
``contents.bytes_contents``) as ``string``: same wire format, read without UTF-8 checks.
It refuses compressed messages, so a stream with a ``grpc-encoding`` other than
``identity`` skips it (and a request with a session header skips it too: it needs no
key). A body that does not parse, or has no ``text_input``, leaves the header unset.
"""

from __future__ import annotations

import functools
import os
from importlib import resources

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, extension_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.common.matching.v3 import extension_matcher_pb2
from envoy.extensions.filters.common.matcher.action.v3 import skip_action_pb2
from envoy.extensions.filters.http.grpc_field_extraction.v3 import config_pb2 as gfe_pb2
from envoy.extensions.filters.http.lua.v3 import lua_pb2
from envoy.extensions.filters.http.wasm.v3 import wasm_pb2 as wasm_filter_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.wasm.v3 import wasm_pb2
from envoy.type.matcher.v3 import http_inputs_pb2
from google.protobuf import any_pb2, descriptor_pb2, wrappers_pb2
from xds.core.v3 import extension_pb2 as xds_extension_pb2
from xds.type.matcher.v3 import matcher_pb2, string_pb2

from caravan.spec import ModelSpec, PlatformSpec
from caravan.wasm import build

# Request header carrying the prefix key (8 hex digits); a client's own value is removed.
PREFIX_KEY_HEADER = "x-caravan-prefix-key"
FIELDS_FILTER = "caravan.prefix_fields"
KEY_FILTER = "caravan.prefix_key"
METHODS = ("inference.GRPCInferenceService.ModelStreamInfer",
           "inference.GRPCInferenceService.ModelInfer")
PATHS = tuple("/" + "/".join(m.rsplit(".", 1)) for m in METHODS)  # their gRPC :path
FIELDS = ("inputs.name", "inputs.datatype", "raw_input_contents", "inputs.contents.bytes_contents")
_AS_STRING = {("ModelInferRequest", "raw_input_contents"),
              ("InferTensorContents", "bytes_contents")}
_LB = {"session": cluster_pb2.Cluster.MAGLEV, "prefix": cluster_pb2.Cluster.MAGLEV,
       "least_request": cluster_pb2.Cluster.LEAST_REQUEST,
       "round_robin": cluster_pb2.Cluster.ROUND_ROBIN}
HASHED = frozenset({"session", "prefix"})
WASM_MODULE = "prefixkey"
WASM_VM_ID = "caravan_prefix_key"
WASM_RUNTIME = "envoy.wasm.runtime.v8"
# Body bytes the wasm filter holds at most waiting for the prompt's first words (then it
# lets the request go without a key); below Envoy's 1 MiB per-stream buffer limit.
MAX_HOLD_BYTES = 256 * 1024
# Which key mechanism (measured by benchmarks/routing_key_cost.py): "wasm" or "lua".
MECHANISM_ENV = "CARAVAN_PREFIX_KEY_MECHANISM"


def mechanism() -> str:
    """``$CARAVAN_PREFIX_KEY_MECHANISM``: ``lua`` (grpc_field_extraction + Lua) or
    ``wasm`` (the proxy-wasm filter, the default)."""
    return "lua" if os.environ.get(MECHANISM_ENV) == "lua" else "wasm"


def _pack(message: object) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message, deterministic=True)
    return out


def lb_policy(model: ModelSpec) -> cluster_pb2.Cluster.LbPolicy.ValueType:
    """The cluster's load balancer for ``model.routing.policy``."""
    return _LB[model.routing.policy]


def hash_policies(model: ModelSpec) -> list[route_components_pb2.RouteAction.HashPolicy]:
    """The route's hash policies: the session header (terminal when a prefix key
    follows), then ``PREFIX_KEY_HEADER`` for ``prefix``; none for unhashed policies."""
    r = model.routing
    if r.policy not in HASHED:
        return []
    header = route_components_pb2.RouteAction.HashPolicy.Header
    session = route_components_pb2.RouteAction.HashPolicy(
        header=header(header_name=r.session_header), terminal=r.policy == "prefix")
    if r.policy != "prefix":
        return [session]
    return [session, route_components_pb2.RouteAction.HashPolicy(
        header=header(header_name=PREFIX_KEY_HEADER))]


@functools.cache
def descriptor_set() -> bytes:
    """KServe's ``grpc_service.proto`` (and ``model_config.proto``) as a serialized
    FileDescriptorSet, from tritonclient's generated descriptors, with the two BYTES
    fields declared ``string`` (see the module docstring)."""
    from tritonclient.grpc import service_pb2

    fds = descriptor_pb2.FileDescriptorSet()
    for f in (*service_pb2.DESCRIPTOR.dependencies, service_pb2.DESCRIPTOR):
        proto = descriptor_pb2.FileDescriptorProto()
        f.CopyToProto(proto)
        fds.file.append(proto)
    for proto in fds.file:
        for message in proto.message_type:
            for field in message.field:
                if (message.name, field.name) in _AS_STRING:
                    field.type = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    return bytes(fds.SerializeToString(deterministic=True))


def _fields_config() -> gfe_pb2.GrpcFieldExtractionConfig:
    fields = gfe_pb2.FieldExtractions()
    for path in FIELDS:
        fields.request_field_extractions[path].CopyFrom(gfe_pb2.RequestFieldValueDisposition())
    config = gfe_pb2.GrpcFieldExtractionConfig(
        descriptor_set=base_pb2.DataSource(inline_bytes=descriptor_set()))
    for method in METHODS:
        config.extractions_by_method[method].CopyFrom(fields)
    return config


def _header_matches(header: str, regex: str) -> matcher_pb2.Matcher.MatcherList.Predicate:
    single = matcher_pb2.Matcher.MatcherList.Predicate.SinglePredicate(
        input=xds_extension_pb2.TypedExtensionConfig(
            name="request-headers",
            typed_config=_pack(http_inputs_pb2.HttpRequestHeaderMatchInput(header_name=header))),
        value_match=string_pb2.StringMatcher(safe_regex=_regex(regex)))
    return matcher_pb2.Matcher.MatcherList.Predicate(single_predicate=single)


def _regex(regex: str) -> object:
    from xds.type.matcher.v3 import regex_pb2

    return regex_pb2.RegexMatcher(regex=regex, google_re2=regex_pb2.RegexMatcher.GoogleRE2())


def _skip_when(session_headers: list[str]) -> matcher_pb2.Matcher:
    """Skip the extraction for a compressed stream or one with a session header."""
    predicate = matcher_pb2.Matcher.MatcherList.Predicate
    compressed = predicate(and_matcher=predicate.PredicateList(predicate=[
        _header_matches("grpc-encoding", ".*"),
        predicate(not_matcher=_header_matches("grpc-encoding", "identity"))]))
    anyof = [compressed, *(_header_matches(h, ".*") for h in session_headers)]
    skip = matcher_pb2.Matcher.OnMatch(action=xds_extension_pb2.TypedExtensionConfig(
        name="skip", typed_config=_pack(skip_action_pb2.SkipFilter())))
    return matcher_pb2.Matcher(matcher_list=matcher_pb2.Matcher.MatcherList(matchers=[
        matcher_pb2.Matcher.MatcherList.FieldMatcher(
            predicate=predicate(or_matcher=predicate.PredicateList(predicate=anyof)),
            on_match=skip)]))


def wasm_plugin_config(spec: PlatformSpec) -> str:
    """The configuration text of ``caravan/wasm/prefixkey.c`` (format there): the key
    header, the model header and default model, the keyed methods, the hold cap, and per
    ``prefix`` model its ``prefix_tokens`` and session header."""
    lines = [f"key {PREFIX_KEY_HEADER}", f"model_header {spec.envoy.model_header}",
             f"default {spec.default.name}", *(f"path {p}" for p in PATHS),
             f"max_hold {MAX_HOLD_BYTES}"]
    for m in spec.models:
        if m.routing.policy == "prefix":
            lines.append(f"model {m.name} {m.routing.prefix_tokens} {m.routing.session_header}")
    return "\n".join(lines) + "\n"


def _wasm_filter(spec: PlatformSpec) -> hcm_pb2.HttpFilter:
    vm = wasm_pb2.VmConfig(vm_id=WASM_VM_ID, runtime=WASM_RUNTIME)
    vm.code.local.inline_bytes = build.module_bytes(WASM_MODULE)
    # allow_on_headers_stop_iteration: by default Envoy turns a StopIteration from the
    # headers callback into StopAllIteration, which also withholds the body from the filter
    plugin = wasm_pb2.PluginConfig(name=WASM_VM_ID, vm_config=vm,
                                   allow_on_headers_stop_iteration=wrappers_pb2.BoolValue(value=True))
    plugin.configuration.Pack(wrappers_pb2.StringValue(value=wasm_plugin_config(spec)))
    return hcm_pb2.HttpFilter(name=KEY_FILTER, typed_config=_pack(wasm_filter_pb2.Wasm(config=plugin)))


def http_filters(spec: PlatformSpec) -> list[hcm_pb2.HttpFilter]:
    """The listener's prefix-key filters (``FIELDS_FILTER``, ``KEY_FILTER``; routes to
    other models disable them, see ``per_route_filters``); none when no model routes by
    prefix."""
    prefix = [m for m in spec.models if m.routing.policy == "prefix"]
    if not prefix:
        return []
    if mechanism() == "wasm":
        return [_wasm_filter(spec)]
    headers = sorted({m.routing.session_header for m in prefix})
    fields = extension_matcher_pb2.ExtensionWithMatcher(
        xds_matcher=_skip_when(headers),
        extension_config=extension_pb2.TypedExtensionConfig(
            name="envoy.filters.http.grpc_field_extraction", typed_config=_pack(_fields_config())))
    return [hcm_pb2.HttpFilter(name=FIELDS_FILTER, typed_config=_pack(fields)),
            hcm_pb2.HttpFilter(name=KEY_FILTER, typed_config=_pack(lua_pb2.Lua()))]


@functools.cache
def _lua_template() -> str:
    return resources.files("caravan.xds").joinpath("prefix_key.lua").read_text()


def lua_script(model: ModelSpec) -> str:
    """The Lua key script for ``model`` (its ``prefix_tokens``)."""
    return (_lua_template().replace("@HEADER@", PREFIX_KEY_HEADER)
            .replace("@MAX_WORDS@", str(model.routing.prefix_tokens)))


def per_route_filters(spec: PlatformSpec, model: ModelSpec | None) -> dict[str, any_pb2.Any]:
    """``typed_per_filter_config`` of a route to ``model`` (None: a route to no model):
    the model's Lua script on a ``prefix`` model's routes; both filters disabled on every
    other route (Envoy enables a filter per route only through a per-route config, which
    ``grpc_field_extraction`` has none of). Empty when no model routes by prefix."""
    if not any(m.routing.policy == "prefix" for m in spec.models):
        return {}
    off = _pack(route_components_pb2.FilterConfig(disabled=True))
    if mechanism() == "wasm":
        return {} if model is not None and model.routing.policy == "prefix" else {KEY_FILTER: off}
    if model is None or model.routing.policy != "prefix":
        return {FIELDS_FILTER: off, KEY_FILTER: off}
    lua = lua_pb2.LuaPerRoute(source_code=base_pb2.DataSource(inline_string=lua_script(model)))
    return {KEY_FILTER: _pack(lua)}
