"""The per-inference rate limit filter (caravan.xds.inference_limit): its configuration
text, its place in the filter chain, and the module it carries (compiled by
caravan.wasm.build)."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.extensions.filters.http.wasm.v3 import wasm_pb2 as wasm_filter_pb2
from envoy.extensions.wasm.v3 import wasm_pb2
from google.protobuf import wrappers_pb2

from caravan.spec import RateLimit, parse_spec
from caravan.wasm import build
from caravan.xds import inference_limit as il
from caravan.xds import jwt_auth, wasm_filter
from caravan.xds import resources as res
from caravan.xds import security as sec

XDS_MTLS = {"cert_file": "c", "key_file": "k", "ca_file": "a", "client_ca_file": "a",
            "client_cert_file": "cc", "client_key_file": "ck"}
UPSTREAM_MTLS = {"ca_file": "rca", "cert_file": "ec", "key_file": "ek"}
JWKS = '{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}'


def _unpack(f: Any) -> tuple[wasm_filter_pb2.Wasm, str]:
    cfg = wasm_filter_pb2.Wasm()
    assert f.typed_config.Unpack(cfg)
    text = wrappers_pb2.StringValue()
    assert cfg.config.configuration.Unpack(text)
    return cfg, text.value


@pytest.mark.parametrize(
    ("limits", "default", "lines"),
    [
        ({"b": RateLimit(requests_per_s=0.2, burst=3), "a": RateLimit(requests_per_s=50, burst=50)},
         None, ["limit a 50 50", "limit b 0.2 3"]),
        ({}, RateLimit(requests_per_s=2.5, burst=4), ["default 2.5 4"]),
    ],
    ids=["clients-sorted", "default-only"],
)
def test_plugin_config(limits: dict[str, RateLimit], default: RateLimit | None,
                       lines: list[str]) -> None:
    text = il.plugin_config("x-caravan-client", limits, default)
    assert text.splitlines() == ["header x-caravan-client",
                                 *(f"path {p}" for p in il.INFERENCE_PATHS), *lines]


def test_filter_carries_the_module_inline_on_v8() -> None:
    f = il.inference_limit("x-h", {"a": RateLimit(requests_per_s=1, burst=1)}, code=b"\0asm")
    cfg, text = _unpack(f)
    vm = cfg.config.vm_config
    assert (f.name, vm.vm_id, vm.runtime) == (il.FILTER_NAME, il.VM_ID, wasm_filter.RUNTIME)
    assert vm.code.local.inline_bytes == b"\0asm"
    assert cfg.config.failure_policy == wasm_pb2.FAIL_RELOAD, "a failed VM must not fail later requests"
    assert text.startswith("header x-h\n")


def _api_key_spec() -> Any:
    spec = parse_spec({
        "models": [{"name": "m", "engine": {"model": "x"}}],
        "security": {"xds_tls": XDS_MTLS, "upstream_tls": UPSTREAM_MTLS, "api_keys": {
            "file": "/k", "client_limits": {"bob": {"requests_per_s": 1, "burst": 3}}}},
    })
    return sec.with_loaded_keys(spec, {}, lambda _: f"alice: {'a' * 20}\nbob: {'b' * 20}\n")


def test_api_key_limits_count_inferences_after_the_stream_limit() -> None:
    filters = res.http_connection_manager(_api_key_spec()).http_filters
    names = [f.name for f in filters]
    assert names.index(il.FILTER_NAME) == names.index("envoy.filters.http.local_ratelimit") + 1
    _, text = _unpack(filters[names.index(il.FILTER_NAME)])
    assert text.splitlines()[0] == f"header {sec.CLIENT_HEADER}"
    assert text.splitlines()[-1] == "limit bob 1 3", "alice has no limit"


def test_jwt_limits_count_inferences_per_subject() -> None:
    spec = parse_spec({
        "models": [{"name": "m", "engine": {"model": "x"}}],
        "security": {"xds_tls": XDS_MTLS, "upstream_tls": UPSTREAM_MTLS, "jwt": {
            "issuer": "i", "audiences": ["a"], "jwks_file": "/j",
            "rate_limit": {"requests_per_s": 2, "burst": 4},
            "subject_limits": {"vip": {"requests_per_s": 50, "burst": 60}}}},
    })
    filters = res.http_connection_manager(sec.with_loaded_keys(spec, {}, lambda _: JWKS)).http_filters
    wasm = [f for f in filters if f.name == il.FILTER_NAME]
    assert len(wasm) == 1
    _, text = _unpack(wasm[0])
    lines = text.splitlines()
    assert (lines[0], lines[-2:]) == (f"header {jwt_auth.SUBJECT_HEADER}", ["limit vip 50 60", "default 2 4"])


def test_no_limit_no_filter() -> None:
    spec = parse_spec({"models": [{"name": "m", "engine": {"model": "x"}}],
                       "security": {"xds_tls": XDS_MTLS, "upstream_tls": UPSTREAM_MTLS, "api_keys": {"file": "/k"}}})
    spec = sec.with_loaded_keys(spec, {}, lambda _: f"alice: {'a' * 20}\n")
    assert il.FILTER_NAME not in [f.name for f in res.http_connection_manager(spec).http_filters]


def test_module_builds_once_deterministically_with_only_proxy_wasm_imports(tmp_path: Any) -> None:
    out = tmp_path / "a.wasm"
    build.compile_c(build.source_path(il.MODULE), out)
    code = out.read_bytes()
    assert code[:4] == b"\0asm" and code == build.module_bytes(il.MODULE)
    assert b"wasi_snapshot_preview1" not in code
    assert b"proxy_on_request_body" in code and b"proxy_get_shared_data" in code


def test_unknown_filter_source_is_refused() -> None:
    with pytest.raises(ValueError, match="no proxy-wasm filter source 'nope'"):
        build.source_path("nope")
