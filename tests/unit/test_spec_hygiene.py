"""Spec input hygiene and the replica-mTLS rule (issue 17, Deliver 1 and 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from caravan.spec import SpecError, load_spec, parse_spec
from caravan.spec.loader import MAX_EXPANDED_NODES

LAUGHS = "\n".join(
    [f'l0: &l0 [{", ".join(["lol"] * 9)}]']
    + [f'l{i}: &l{i} [{", ".join([f"*l{i - 1}"] * 9)}]' for i in range(1, 9)]
    + ["models: *l8", ""])  # 9^9 ~ 387 million strings from ~600 bytes


def _load(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return load_spec(path)


def test_billion_laughs_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    assert len(LAUGHS) < 700
    with pytest.raises(SpecError) as info:
        _load(tmp_path, LAUGHS)
    assert info.value.errors == [
        f"<yaml>: aliases expand the document to more than {MAX_EXPANDED_NODES} nodes "
        "(an alias bomb?); refused"]


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="refers to itself through an alias"):
        _load(tmp_path, "a: &a [*a]\nmodels: *a\n")


def test_ordinary_anchors_and_merge_keys_still_load(tmp_path: Path) -> None:
    spec = _load(tmp_path, (
        "models:\n"
        "  - {name: a, engine: &engine {model: m, max_model_len: 2048}}\n"
        "  - name: b\n"
        "    engine: {<<: *engine, model: other}\n"))
    assert [(m.engine.model, m.engine.max_model_len) for m in spec.models] == [
        ("m", 2048), ("other", 2048)]


XDS = {"cert_file": "c", "key_file": "k", "ca_file": "a", "client_ca_file": "a",
       "client_cert_file": "cc", "client_key_file": "ck"}
MUTUAL = {"ca_file": "ca", "cert_file": "envoy.pem", "key_file": "envoy.key"}


def _auth_spec(auth: str, upstream: dict[str, Any] | None = None,
               model_tls: dict[str, Any] | None = None, **extra: Any) -> Any:
    section = {"api_keys": {"file": "/k"}} if auth == "api_keys" else {
        "jwt": {"issuer": "i", "audiences": ["a"], "jwks_file": "/j"}}
    security: dict[str, Any] = {**section, "xds_tls": XDS, **extra}
    if upstream is not None:
        security["upstream_tls"] = upstream
    models: list[dict[str, Any]] = [{"name": "a", "engine": {"model": "m"}},
                                    {"name": "b", "engine": {"model": "m"}}]
    if model_tls is not None:
        models[1]["upstream_tls"] = model_tls
    return parse_spec({"models": models, "security": security})


@pytest.mark.parametrize("auth", ["api_keys", "jwt"])
def test_client_auth_requires_replicas_that_accept_only_envoy(auth: str) -> None:
    with pytest.raises(SpecError) as info:
        _auth_spec(auth)
    assert [e.split(":")[0] for e in info.value.errors] == [
        "models[0].upstream_tls", "models[1].upstream_tls"]
    assert f"required with security.{auth}: replicas must accept only Envoy" in info.value.errors[0]
    assert "security.direct_replica_access.reason" in info.value.errors[0]


def test_server_only_replica_tls_is_not_enough_and_each_model_is_named() -> None:
    with pytest.raises(SpecError) as info:
        _auth_spec("api_keys", upstream=MUTUAL, model_tls={"ca_file": "ca"})
    assert [e.split(":")[0] for e in info.value.errors] == ["models[1].upstream_tls.cert_file"]


def test_mutual_replica_tls_or_a_stated_reason_is_accepted() -> None:
    assert _auth_spec("jwt", upstream=MUTUAL).models[1].upstream_tls.cert_file == "envoy.pem"
    reason = {"reason": "a network policy admits only Envoy's hosts to GPU nodes"}
    spec = _auth_spec("api_keys", direct_replica_access=reason)
    assert spec.security.direct_replica_access.reason.startswith("a network policy")
    with pytest.raises(SpecError, match=r"security\.direct_replica_access\.reason: must have at least 10 character"):
        _auth_spec("api_keys", direct_replica_access={"reason": "no"})


def test_without_client_auth_replicas_need_no_tls() -> None:
    assert parse_spec({"models": [{"name": "a", "engine": {"model": "m"}}]}).models[0].upstream_tls is None


def test_the_opt_out_reason_is_written_into_the_triton_job() -> None:
    from caravan.nomad.job_hcl import job_hcl
    from caravan.nomad.triton_job import triton_job

    reason = "GPU nodes admit only Envoy hosts\nnomad { injected }"
    spec = _auth_spec("api_keys", direct_replica_access={"reason": reason})
    text = job_hcl(triton_job(spec, spec.models[0]))
    assert "# Replicas accept clients other than Envoy (direct_replica_access): GPU nodes" in text
    assert "# nomad { injected }" in text  # every line of the reason stays a comment
