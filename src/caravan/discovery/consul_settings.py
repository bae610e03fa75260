"""Resolve how to reach Consul from the spec, the environment and token files.

Pure apart from reading the token file through an injected reader. Precedence,
for each setting: a field set explicitly in the spec, then the environment
(``CONSUL_HTTP_ADDR``, ``CONSUL_HTTP_SSL``, ``CONSUL_HTTP_SSL_VERIFY``,
``CONSUL_CACERT``, ``CONSUL_HTTP_TOKEN_FILE``, ``CONSUL_HTTP_TOKEN``), then the
spec's defaults. As in Consul's own Go client, a token file wins over
``CONSUL_HTTP_TOKEN``.

The token never appears in ``repr``/``str`` of ``ConsulSettings`` nor in any
error message raised here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from caravan.errors import ConfigError
from caravan.spec import ConsulSpec, names
from caravan.token_file import TokenFileError, read_token_file


class ConsulConfigError(ConfigError):
    """A Consul setting is unusable; the message names the field or variable."""


CONSUL_PORT = 8500  # Consul's own default HTTP port, for an address without one
_SPEC = ConsulSpec()  # ConsulSettings' defaults are the spec's, read from here
_SPEC_ADDRESS = urlsplit(f"//{_SPEC.address}")


@dataclass(frozen=True)
class ConsulSettings:
    """Everything the Consul adapter needs. Times in seconds.

    ``verify`` is True (system CAs), False, or a CA bundle path. ``token_file`` is the file
    the token was read from (None when it came from ``CONSUL_HTTP_TOKEN`` or there is none):
    discovery re-reads it and swaps the token when its content changes.
    ``timeout_s`` is added on top of ``wait_s`` (and Consul's wait/16 jitter)
    to give the HTTP read timeout of a blocking query. ``empty_confirm_s``: see
    ``caravan.discovery.guard``.
    """

    host: str = _SPEC_ADDRESS.hostname or _SPEC.address
    port: int = _SPEC_ADDRESS.port or CONSUL_PORT
    scheme: str = _SPEC.scheme
    verify: bool | str = True
    datacenter: str | None = _SPEC.datacenter
    wait_s: float = float(_SPEC.wait_s)
    timeout_s: float = _SPEC.timeout_s
    allow_warning: bool = _SPEC.allow_warning
    service_prefix: str = _SPEC.service_prefix
    empty_confirm_s: float = _SPEC.empty_confirm_s
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def service_name(self, model: str) -> str:
        """The Consul service that holds ``model``'s replicas."""
        return names.consul_service(self.service_prefix, model)


def _read_text(path: str) -> str:
    return Path(path).read_text()


def resolve_consul_settings(
    spec: ConsulSpec,
    env: Mapping[str, str],
    read_file: Callable[[str], str] = _read_text,
) -> ConsulSettings:
    """Build ``ConsulSettings``; raises ``ConsulConfigError`` naming the bad input."""
    explicit = spec.model_fields_set
    if "address" in explicit or not env.get("CONSUL_HTTP_ADDR"):
        addr, addr_field = spec.address, "consul.address"
    else:
        addr, addr_field = env["CONSUL_HTTP_ADDR"], "CONSUL_HTTP_ADDR"
    url_scheme, host, port = parse_address(addr, addr_field)
    scheme = spec.scheme if "scheme" in explicit else _env_scheme(env, url_scheme, spec.scheme)
    return ConsulSettings(
        host=host, port=port, scheme=scheme, verify=_verify(spec, env),
        datacenter=spec.datacenter, wait_s=float(spec.wait_s), timeout_s=float(spec.timeout_s),
        allow_warning=spec.allow_warning, service_prefix=spec.service_prefix,
        empty_confirm_s=float(spec.empty_confirm_s), token=_token(spec, env, read_file),
        token_file=spec.token_file or env.get("CONSUL_HTTP_TOKEN_FILE") or None,
    )


def parse_address(addr: str, field_name: str) -> tuple[str | None, str, int]:
    """``host:port``, ``[v6]:port`` or ``scheme://host:port`` -> (scheme or None,
    host, port); the port defaults to Consul's (``CONSUL_PORT``)."""
    text = addr.strip()
    has_scheme = "://" in text
    if has_scheme and not text.startswith(("http://", "https://")):
        raise ConsulConfigError(f"{field_name}: {addr!r}: only http:// and https:// are supported")
    parts = urlsplit(text if has_scheme else f"//{text}")
    try:
        port = parts.port or CONSUL_PORT
    except ValueError:
        raise ConsulConfigError(f"{field_name}: {addr!r}: port must be 1-65535") from None
    host = parts.hostname
    if not host or parts.path not in ("", "/"):
        raise ConsulConfigError(f"{field_name}: {addr!r}: expected host:port or http(s)://host:port")
    return (parts.scheme or None), host, port


def _env_scheme(env: Mapping[str, str], url_scheme: str | None, default: str) -> str:
    ssl = env.get("CONSUL_HTTP_SSL", "").strip().lower()
    if ssl:
        if ssl not in ("true", "false", "1", "0"):
            raise ConsulConfigError(f"CONSUL_HTTP_SSL: expected true or false, got {ssl!r}")
        return "https" if ssl in ("true", "1") else "http"
    return url_scheme or default


def _verify(spec: ConsulSpec, env: Mapping[str, str]) -> bool | str:
    if spec.ca_file:
        return spec.ca_file
    if env.get("CONSUL_CACERT"):
        return env["CONSUL_CACERT"]
    flag = env.get("CONSUL_HTTP_SSL_VERIFY", "").strip().lower()
    if flag and flag not in ("true", "false", "1", "0"):
        raise ConsulConfigError(f"CONSUL_HTTP_SSL_VERIFY: expected true or false, got {flag!r}")
    return flag not in ("false", "0")


def _token(spec: ConsulSpec, env: Mapping[str, str], read_file: Callable[[str], str]) -> str | None:
    if spec.token_file:
        return _token_from_file(spec.token_file, "consul.token_file", read_file)
    if env.get("CONSUL_HTTP_TOKEN_FILE"):
        return _token_from_file(env["CONSUL_HTTP_TOKEN_FILE"], "CONSUL_HTTP_TOKEN_FILE", read_file)
    token = env.get("CONSUL_HTTP_TOKEN", "").strip()
    return token or None


def _token_from_file(path: str, field_name: str, read_file: Callable[[str], str]) -> str:
    try:
        return read_token_file(path, field_name, read_file)
    except TokenFileError as exc:
        raise ConsulConfigError(str(exc)) from None
