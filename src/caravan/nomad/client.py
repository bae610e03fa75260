"""The one way Caravan builds a python-nomad client: settings from flags, environment
and spec, with one precedence, and TLS that is verified.

``caravan deploy`` and ``caravan autoscale`` both use it. Precedence, per setting:

* address: ``--address`` / ``--nomad-address`` flag > ``NOMAD_ADDR`` > ``nomad.address``
* ACL token: ``--token-file`` flag > ``NOMAD_TOKEN`` > ``nomad.token_file`` (never in the
  spec itself; held only in ``NomadSettings.token``, left out of ``repr``)
* TLS: ``NOMAD_CACERT`` > ``nomad.ca_file``; ``NOMAD_CLIENT_CERT`` / ``NOMAD_CLIENT_KEY`` >
  ``nomad.client_cert`` / ``nomad.client_key`` (both or neither)
* ``NOMAD_NAMESPACE`` > ``nomad.namespace``; ``NOMAD_REGION`` > ``nomad.region``

An ``https`` address is verified against the CA bundle (the system roots without one:
python-nomad's own default, ``verify=False``, is never used) and presents the client
certificate when one is set, so an mTLS Nomad (``tls.verify_https_client``) is reachable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from caravan.spec import NomadSpec
from caravan.token_file import read_token_file

if TYPE_CHECKING:
    import nomad


@dataclass(frozen=True)
class NomadSettings:
    """Where and how to reach Nomad. ``token`` never appears in ``repr``."""

    address: str
    namespace: str
    region: str | None = None
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    token: str | None = field(default=None, repr=False)


def resolve_nomad_settings(
    spec: NomadSpec, env: Mapping[str, str], read_file: Callable[[str], str],
    address: str | None = None, token_file: str | None = None,
) -> NomadSettings:
    """Flag > environment (NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT, NOMAD_CLIENT_CERT,
    NOMAD_CLIENT_KEY, NOMAD_NAMESPACE, NOMAD_REGION) > spec. A token file beats
    NOMAD_TOKEN when given as a flag; the spec's token file comes last.
    Raises ValueError naming the bad setting."""
    addr = address or env.get("NOMAD_ADDR") or spec.address
    parts = urlsplit(addr)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"nomad address {addr!r}: expected http(s)://HOST:PORT")
    token = None
    if token_file:
        token = _read_token(token_file, read_file)
    elif env.get("NOMAD_TOKEN"):
        token = env["NOMAD_TOKEN"].strip()
    elif spec.token_file:
        token = _read_token(spec.token_file, read_file)
    cert = env.get("NOMAD_CLIENT_CERT") or spec.client_cert
    key = env.get("NOMAD_CLIENT_KEY") or spec.client_key
    if bool(cert) != bool(key):
        have, missing = ("certificate", "NOMAD_CLIENT_KEY or nomad.client_key") if cert else (
            "key", "NOMAD_CLIENT_CERT or nomad.client_cert")
        raise ValueError(f"nomad client {have} given without its pair: set {missing}")
    return NomadSettings(
        address=addr.rstrip("/"), namespace=env.get("NOMAD_NAMESPACE") or spec.namespace,
        region=env.get("NOMAD_REGION") or spec.region,
        ca_file=env.get("NOMAD_CACERT") or spec.ca_file,
        client_cert=cert, client_key=key, token=token,
    )


def _read_token(path: str, read_file: Callable[[str], str]) -> str:
    return read_token_file(path, "token file", read_file)


def nomad_client(settings: NomadSettings, timeout_s: float = 30.0) -> nomad.Nomad:
    """A python-nomad client for ``settings``; ``timeout_s`` bounds every request."""
    import nomad as nomad_lib

    https = settings.address.startswith("https://")
    cert = (settings.client_cert, settings.client_key)
    verify: bool | str = (settings.ca_file or True) if https else False
    return nomad_lib.Nomad(
        address=settings.address, namespace=settings.namespace, region=settings.region,
        token=settings.token, timeout=timeout_s, verify=verify,
        cert=cert if all(cert) else (),
    )
