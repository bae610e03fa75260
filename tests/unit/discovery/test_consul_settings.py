"""Resolution of Consul address, scheme, TLS and token from spec, env and files."""

from __future__ import annotations

from typing import Any

import pytest

from caravan.discovery.consul_settings import ConsulConfigError, resolve_consul_settings
from caravan.spec import ConsulSpec

FILES = {"/run/token": "  s3cr3t-from-file\n", "/run/empty": "\n", "/run/env-token": "env-file-tok"}


def read(path: str) -> str:
    if path not in FILES:
        raise FileNotFoundError(2, "No such file or directory", path)
    return FILES[path]


CASES: list[tuple[str, dict[str, Any], dict[str, str], dict[str, Any]]] = [
    ("defaults", {}, {}, {"host": "127.0.0.1", "port": 8500, "scheme": "http", "token": None,
                          "verify": True}),
    ("env address", {}, {"CONSUL_HTTP_ADDR": "10.1.2.3:8501"}, {"host": "10.1.2.3", "port": 8501}),
    ("env url sets scheme", {}, {"CONSUL_HTTP_ADDR": "https://consul.service:8501"},
     {"host": "consul.service", "scheme": "https"}),
    ("ipv6", {"address": "[fd00::1]:8500"}, {}, {"host": "fd00::1", "port": 8500}),
    ("port defaults to 8500", {"address": "consul.local"}, {}, {"port": 8500}),
    ("explicit spec address beats env", {"address": "10.0.0.1:8500"},
     {"CONSUL_HTTP_ADDR": "10.9.9.9:1"}, {"host": "10.0.0.1"}),
    ("CONSUL_HTTP_SSL", {}, {"CONSUL_HTTP_SSL": "true"}, {"scheme": "https"}),
    ("token env", {}, {"CONSUL_HTTP_TOKEN": "tok"}, {"token": "tok"}),
    ("token file env beats token env", {},
     {"CONSUL_HTTP_TOKEN": "tok", "CONSUL_HTTP_TOKEN_FILE": "/run/env-token"},
     {"token": "env-file-tok"}),
    ("spec token file wins and is trimmed", {"token_file": "/run/token"},
     {"CONSUL_HTTP_TOKEN_FILE": "/run/env-token"}, {"token": "s3cr3t-from-file"}),
    ("ca from env", {}, {"CONSUL_CACERT": "/etc/ca.pem"}, {"verify": "/etc/ca.pem"}),
    ("ca from spec", {"ca_file": "/spec/ca.pem"}, {"CONSUL_CACERT": "/etc/ca.pem"},
     {"verify": "/spec/ca.pem"}),
    ("verify off", {}, {"CONSUL_HTTP_SSL_VERIFY": "false"}, {"verify": False}),
    ("spec knobs", {"wait_s": 5, "timeout_s": 2.5, "allow_warning": True, "datacenter": "eu"}, {},
     {"wait_s": 5.0, "timeout_s": 2.5, "allow_warning": True, "datacenter": "eu"}),
]


@pytest.mark.parametrize(("spec", "env", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_resolve(spec: dict[str, Any], env: dict[str, str], want: dict[str, Any]) -> None:
    s = resolve_consul_settings(ConsulSpec(**spec), env, read)
    assert {k: getattr(s, k) for k in want} == want


ERRORS = [
    ("bad port", {"address": "10.0.0.1:99999"}, {}, "consul.address: '10.0.0.1:99999': port"),
    ("unix socket", {}, {"CONSUL_HTTP_ADDR": "unix:///tmp/c.sock"}, "CONSUL_HTTP_ADDR: "),
    ("path in address", {"address": "http://h:1/x"}, {}, "consul.address: "),
    ("missing token file", {"token_file": "/nope"}, {},
     "consul.token_file '/nope': cannot read it (No such file"),
    ("empty token file", {}, {"CONSUL_HTTP_TOKEN_FILE": "/run/empty"},
     "CONSUL_HTTP_TOKEN_FILE '/run/empty': is empty; expected a token"),
    ("bad ssl flag", {}, {"CONSUL_HTTP_SSL": "yes please"},
     "CONSUL_HTTP_SSL: expected true or false"),
]


@pytest.mark.parametrize(("spec", "env", "msg"), [c[1:] for c in ERRORS],
                         ids=[c[0] for c in ERRORS])
def test_errors_name_the_input(spec: dict[str, Any], env: dict[str, str], msg: str) -> None:
    with pytest.raises(ConsulConfigError) as info:
        resolve_consul_settings(ConsulSpec(**spec), env, read)
    assert str(info.value).startswith(msg)


def test_token_never_in_repr_or_errors() -> None:
    s = resolve_consul_settings(ConsulSpec(token_file="/run/token"), {}, read)
    assert "s3cr3t" not in repr(s) and "s3cr3t" not in str(s)


def test_service_name_and_url() -> None:
    s = resolve_consul_settings(ConsulSpec(address="[::1]:8500", service_prefix="vllm-"), {}, read)
    assert (s.service_name("llama"), s.base_url) == ("vllm-llama", "http://[::1]:8500")


IPV6 = [
    ("bracketed with port", "[::1]:8500", None),
    ("bracketed with scheme", "https://[fd00::5]:8501", None),
    ("unbracketed", "::1", "an IPv6 address needs brackets"),
    ("unbracketed with scheme", "http://fe80::1:8500", "an IPv6 address needs brackets"),
]


@pytest.mark.parametrize(("address", "error"), [c[1:] for c in IPV6], ids=[c[0] for c in IPV6])
def test_ipv6_consul_address_works_or_caravan_validate_says_why(address: str,
                                                                error: str | None) -> None:
    from caravan.spec import SpecError, parse_spec

    data = {"models": [{"name": "a", "engine": {"model": "x"}}], "consul": {"address": address}}
    if error is not None:
        with pytest.raises(SpecError, match=error):
            parse_spec(data)
        return
    settings = resolve_consul_settings(parse_spec(data).consul, {})
    assert settings.base_url.split("//")[1].startswith("[")
