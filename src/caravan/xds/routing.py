"""Routing policies as Envoy config (pure, given the key filter's module bytes): each
model's ``routing.policy`` becomes its cluster's load balancer, its routes' hash policies
and, for ``prefix``, one HTTP filter that derives the key.

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
open for many requests. ``KEY_FILTER`` is Caravan's proxy-wasm filter
(``caravan/wasm/prefixkey.c``, compiled by ``caravan.wasm.build`` and sent inline over
LDS, like the inference rate limit): on ``METHODS`` it removes any client value of
``PREFIX_KEY_HEADER``, holds the headers (unless the request carries its model's session
header or a ``grpc-encoding`` other than ``identity``: those need or get no key), reads
the first gRPC message as it arrives (however many HTTP/2 frames it spans; never waiting
for the end of the stream) and, as soon as the first ``prefix_tokens`` words of
``text_input`` are there, sets ``PREFIX_KEY_HEADER`` to their 32-bit FNV-1a and lets the
stream go on. A body that is not a ModelInferRequest with a prompt, a compressed message,
a stream that ends first or a prompt whose first words are not within
``MAX_HOLD_BYTES`` goes on without a key; the filter never fails a request. Its plugin
configuration (``wasm_plugin_config``) names every ``prefix`` model with its
``prefix_tokens`` and session header; the filter finds a request's model as the routes do
(the model header, else the default model). Routes to other models disable it.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import any_pb2

from caravan.spec import ModelSpec, PlatformSpec
from caravan.xds.wasm_filter import INFERENCE_PATHS, wasm_http_filter

# Request header carrying the prefix key (8 hex digits); a client's own value is removed.
PREFIX_KEY_HEADER = "x-caravan-prefix-key"
KEY_FILTER = "caravan.prefix_key"
METHODS = ("inference.GRPCInferenceService.ModelStreamInfer",
           "inference.GRPCInferenceService.ModelInfer")
PATHS = INFERENCE_PATHS  # their gRPC :path
_LB = {"session": cluster_pb2.Cluster.MAGLEV, "prefix": cluster_pb2.Cluster.MAGLEV,
       "least_request": cluster_pb2.Cluster.LEAST_REQUEST,
       "round_robin": cluster_pb2.Cluster.ROUND_ROBIN}
HASHED = frozenset({"session", "prefix"})
WASM_MODULE = "prefixkey"
WASM_VM_ID = "caravan_prefix_key"
# Body bytes the key filter holds at most waiting for the prompt's first words (then the
# request goes on without a key); below Envoy's 1 MiB per-stream buffer limit.
MAX_HOLD_BYTES = 256 * 1024


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


def _prefix_models(spec: PlatformSpec) -> list[ModelSpec]:
    return [m for m in spec.models if m.routing.policy == "prefix"]


def wasm_plugin_config(spec: PlatformSpec) -> str:
    """The key filter's configuration text (format in ``prefixkey.c``): the key header,
    the model header and default model, the keyed methods' paths, the hold cap, and per
    ``prefix`` model its ``prefix_tokens`` and session header (header names in lower
    case, as Envoy's header map holds them)."""
    lines = [f"key {PREFIX_KEY_HEADER}", f"model_header {spec.envoy.model_header.lower()}",
             f"default {spec.default.name}", *(f"path {p}" for p in PATHS),
             f"max_hold {MAX_HOLD_BYTES}"]
    lines += [f"model {m.name} {m.routing.prefix_tokens} {m.routing.session_header.lower()}"
              for m in _prefix_models(spec)]
    return "\n".join(lines) + "\n"


def key_filter(spec: PlatformSpec, code: bytes | None = None) -> hcm_pb2.HttpFilter:
    """``envoy.filters.http.wasm`` running ``prefixkey.c`` on the V8 runtime with
    ``wasm_plugin_config(spec)``. ``code``: the module bytes (default:
    ``caravan.wasm.build.module_bytes(WASM_MODULE)``, compiled once per machine)."""
    # The filter holds the headers until the prompt's first words are in the body.
    return wasm_http_filter(KEY_FILTER, WASM_VM_ID, WASM_MODULE, wasm_plugin_config(spec),
                            code=code, hold_headers=True)


def http_filters(spec: PlatformSpec) -> list[hcm_pb2.HttpFilter]:
    """The listener's prefix-key filter (``KEY_FILTER``; routes to other models disable
    it, see ``per_route_filters``); none when no model routes by prefix."""
    return [key_filter(spec)] if _prefix_models(spec) else []


def per_route_filters(spec: PlatformSpec, model: ModelSpec | None) -> dict[str, any_pb2.Any]:
    """``typed_per_filter_config`` of a route to ``model`` (None: a route to no model):
    nothing on a ``prefix`` model's routes, ``KEY_FILTER`` disabled on every other route.
    Empty when no model routes by prefix."""
    if not _prefix_models(spec) or (model is not None and model.routing.policy == "prefix"):
        return {}
    return {KEY_FILTER: _pack(route_components_pb2.FilterConfig(disabled=True))}
