"""The per-inference rate limit as an Envoy HTTP filter (pure, given the module bytes).

``local_ratelimit`` takes one token per HTTP/2 stream, and one ``ModelStreamInfer``
stream carries any number of requests. This filter takes one token per *gRPC message*
on the inference methods (``INFERENCE_PATHS``): Caravan's proxy-wasm filter
(``caravan/wasm/ratelimit.c``) counts the 5-byte gRPC frame headers of the request body
and keeps one token bucket per client in Envoy's process-wide proxy-wasm shared data
(compare-and-swap, so every worker, connection and stream of a client draws from one
bucket). A message that finds its client's bucket empty ends its stream with gRPC
RESOURCE_EXHAUSTED and ``refused_message(client)``; it never reaches a replica.

So a client limited to ``requests_per_s`` R with ``burst`` B gets at most B + R*t
inferences forwarded over any t seconds, on one stream or many. The module is compiled
by ``caravan.wasm.build`` and sent inline over xDS (about 8 KB).
"""

from __future__ import annotations

from collections.abc import Mapping

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from caravan.spec import RateLimit
from caravan.xds.wasm_filter import INFERENCE_PATHS, wasm_http_filter

MODULE = "ratelimit"
VM_ID = "caravan_inference_limit"
FILTER_NAME = "envoy.filters.http.wasm"
REFUSED_STAT = "wasmcustom.caravan_inference_limit.refused_streams"


def refused_message(client: str) -> str:
    """The grpc-message of a stream refused for its client's inference rate."""
    return f"caravan: client '{client}' is over its inference rate limit"


def _number(x: float) -> str:
    return f"{x:.6f}".rstrip("0").rstrip(".")


def plugin_config(header: str, limits: Mapping[str, RateLimit], default: RateLimit | None) -> str:
    """The filter's configuration text (format in ``ratelimit.c``): the identity header,
    the counted paths, each client's bucket (sorted), then the default bucket."""
    lines = [f"header {header}", *(f"path {p}" for p in INFERENCE_PATHS)]
    for client, limit in sorted(limits.items()):
        lines.append(f"limit {client} {_number(limit.requests_per_s)} {limit.burst}")
    if default is not None:
        lines.append(f"default {_number(default.requests_per_s)} {default.burst}")
    return "\n".join(lines) + "\n"


def inference_limit(
    header: str, limits: Mapping[str, RateLimit], default: RateLimit | None = None,
    code: bytes | None = None,
) -> hcm_pb2.HttpFilter:
    """``envoy.filters.http.wasm`` running ``ratelimit.c`` on the V8 runtime, keyed on
    ``header`` (set by the authentication filter before it): ``limits`` per client,
    ``default`` for any other client (None: others are not counted). ``code``: the
    module bytes (default: ``caravan.wasm.build.module_bytes(MODULE)``, compiled once)."""
    return wasm_http_filter(FILTER_NAME, VM_ID, MODULE, plugin_config(header, limits, default),
                            code=code)
