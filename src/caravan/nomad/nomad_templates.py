"""consul-template texts embedded in Nomad jobs (``template`` blocks). Pure.

Every text from the spec (free-form strings such as ``engine.model``, file paths, the
JWT issuer) goes through ``template_literal`` before it is embedded, so a ``{{`` or
``}}`` in it is printed, never run by consul-template (``{{ env ... }}``,
``{{ key ... }}``); only the actions written here are evaluated.

- ``secrets_env``: every key of the job's Nomad Variables (``nomad/jobs/<job>``) as
  ``KEY="value"`` lines for an ``env = true`` template. Operators store
  ``CONSUL_HTTP_TOKEN``, ``NOMAD_TOKEN``, ``HF_TOKEN`` there (``nomad var put``);
  no token ever appears in a rendered file. An absent variable renders nothing.
  ``nomadVarList`` lists by path *prefix*, so variables meant for files (a replica's
  TLS key) are passed in ``skip`` to stay out of the environment.
  With ``token_file``, the ``CONSUL_HTTP_TOKEN`` item becomes
  ``CONSUL_HTTP_TOKEN_FILE=<token_file>`` instead, so the environment (and a
  ``restart`` template over it) does not change when the token does.
- ``job_var_item``: one item of the job's Nomad Variables (the token file beside that
  environment: ``CONSUL_TOKEN_PATH``); renders nothing, and does not block, while the
  variables or the item do not exist.
- ``nomad_var_item``: one item of one Nomad Variable, for a file template
  (``secrets/...``); ``nomadVar`` blocks until the variable exists.
- ``platform_yaml``: the spec as YAML for in-cluster ``caravan`` commands, with
  addresses and ports taken from the allocation (``{{ env "NOMAD_PORT_xds" }}``)
  and token files dropped (tokens come from ``secrets_env``).
- ``envoy_bootstrap``: ``caravan.render.envoy.bootstrap()`` as JSON, whose xDS
  cluster endpoints are every ``caravan-xds`` instance in Consul (``range service``),
  with the admin on loopback and a stats-only listener on the allocation's ``stats`` port.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from caravan.render import envoy
from caravan.spec import PlatformSpec, spec_document

XDS_SERVICE = "caravan-xds"
# Where a job's Consul ACL token is rendered from its Nomad Variable CONSUL_HTTP_TOKEN.
CONSUL_TOKEN_PATH = "secrets/consul.token"
CONSUL_TOKEN_ITEM = "CONSUL_HTTP_TOKEN"


def template_literal(text: str) -> str:
    """``text`` as a consul-template whose output is exactly ``text``: every ``{{`` and
    ``}}`` becomes an action printing it (``{{ "{{" }}``)."""
    opened = text.replace("{{", "\x00L").replace("}}", "\x00R")
    return opened.replace("\x00L", '{{ "{{" }}').replace("\x00R", '{{ "}}" }}')


def secrets_env(job_id: str, skip: tuple[str, ...] = (), token_file: str | None = None) -> str:
    """The env template over ``nomad/jobs/<job_id>*``, leaving out the ``skip`` paths;
    with ``token_file`` (an absolute path in the task), ``CONSUL_HTTP_TOKEN`` is replaced
    by ``CONSUL_HTTP_TOKEN_FILE`` naming it."""
    for path in skip:
        _check_var_path(path)
    line = "{{ .K }}={{ .V | toJSON }}"
    if token_file is not None:
        _check_var_path(token_file)
        line = (f'{{{{ if eq .K "{CONSUL_TOKEN_ITEM}" }}}}{CONSUL_TOKEN_ITEM}_FILE="{token_file}"'
                f"{{{{ else }}}}{line}{{{{ end }}}}")
    body = f"{{{{ with nomadVar .Path }}}}{{{{ range .Tuples }}}}{line}\n{{{{ end }}}}{{{{ end }}}}"
    for path in skip:
        body = f'{{{{ if ne .Path "{path}" }}}}{body}{{{{ end }}}}'
    return f'{{{{ range nomadVarList "nomad/jobs/{job_id}" }}}}{body}{{{{ end }}}}\n'


def job_var_item(job_id: str, item: str) -> str:
    """The value of ``item`` in the job's Nomad Variables (``nomad/jobs/<job_id>*``, as
    ``secrets_env`` reads them), without a newline; "" while absent (never blocks)."""
    _check_var_path(f"nomad/jobs/{job_id}")
    _check_item(item)
    return (f'{{{{ range nomadVarList "nomad/jobs/{job_id}" }}}}{{{{ with nomadVar .Path }}}}'
            f'{{{{ range .Tuples }}}}{{{{ if eq .K "{item}" }}}}{{{{ .V }}}}{{{{ end }}}}'
            "{{ end }}{{ end }}{{ end }}")


def nomad_var_item(path: str, item: str) -> str:
    """The value of ``item`` of the Nomad Variable at ``path`` (a file template's data)."""
    _check_var_path(path)
    _check_item(item)
    return f'{{{{ with nomadVar "{path}" }}}}{{{{ .{item} }}}}{{{{ end }}}}\n'


def _check_item(item: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", item):
        raise ValueError(f"Nomad Variable item {item!r} is not an identifier")


def _check_var_path(path: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_./~-]+", path):
        raise ValueError(f"{path!r} is not a Nomad Variable path")


def _placeholder(name: str) -> str:
    return f"__CARAVAN_{name}__"


def platform_yaml(spec: PlatformSpec, xds_ports: bool) -> str:
    """The spec for a control-plane allocation (see module doc). ``xds_ports``: the
    allocation has ports ``xds`` and ``admin`` (the xDS group) to put in ``control_plane``."""
    data: dict[str, Any] = spec_document(spec)
    data.pop("local", None)
    for section in ("control_plane", "envoy", "consul", "nomad"):
        data.setdefault(section, {})
    if xds_ports:
        data["control_plane"].update(address=_placeholder("NOMAD_IP_xds"),
                                     xds_port=_placeholder("NOMAD_PORT_xds"),
                                     admin_port=_placeholder("NOMAD_PORT_admin"))
    data["envoy"]["address"] = "0.0.0.0"  # the listener Envoy gets over LDS
    data["consul"].pop("token_file", None)
    data["nomad"].pop("token_file", None)
    text = template_literal(yaml.safe_dump(data, sort_keys=True, width=1_000_000))
    for name in ("NOMAD_IP_xds", "NOMAD_PORT_xds", "NOMAD_PORT_admin"):
        value = f'{{{{ env "{name}" }}}}'  # renders to a bare IP or port number
        text = text.replace(f"'{_placeholder(name)}'", value).replace(_placeholder(name), value)
    return "# caravan platform spec for this allocation (rendered by Nomad)\n" + text


_XDS_PLACEHOLDER = "__CARAVAN_XDS__"
_STATS_IP = "__CARAVAN_NOMAD_IP_stats__"
_STATS_PORT = "__CARAVAN_NOMAD_PORT_stats__"


def envoy_bootstrap(spec: PlatformSpec) -> str:
    """Envoy's bootstrap (JSON, valid YAML) as a consul-template text: the xDS cluster's
    endpoints are every ``caravan-xds`` instance in Consul; the admin is on
    127.0.0.1:``envoy.admin_port``; the stats-only listener on the allocation's
    ``stats`` port and IP. Spec text in it is escaped (``template_literal``)."""
    boot = envoy.bootstrap(spec, [("xds.invalid", 1)], stats=("0.0.0.0", 1))
    clusters = boot["static_resources"]["clusters"]
    xds = next(c for c in clusters if c["name"] == envoy.XDS_CLUSTER)
    xds["load_assignment"]["endpoints"][0]["lb_endpoints"] = _XDS_PLACEHOLDER
    address = boot["static_resources"]["listeners"][0]["address"]["socket_address"]
    address.update(address=_STATS_IP, port_value=_STATS_PORT)
    text = template_literal(json.dumps(boot, indent=2, sort_keys=False))
    endpoint = ('{"endpoint": {"address": {"socket_address": '
                '{"address": "{{ .Address }}", "port_value": {{ .Port }} } } } }')
    service = XDS_SERVICE
    endpoints = (f'[{{{{ range $i, $s := service "{service}" }}}}{{{{ if $i }}}}, {{{{ end }}}}'
                 f'{{{{ with $s }}}}{endpoint}{{{{ end }}}}{{{{ end }}}}]')
    text = text.replace(f'"{_XDS_PLACEHOLDER}"', endpoints)
    text = text.replace(_STATS_IP, '{{ env "NOMAD_IP_stats" }}')
    return text.replace(f'"{_STATS_PORT}"', '{{ env "NOMAD_PORT_stats" }}') + "\n"
