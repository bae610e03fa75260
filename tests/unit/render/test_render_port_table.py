"""docs/security.md's port table is the rendered jobs' ports (issue 17, Deliver 1).

Every Nomad port of every job rendered from the example spec (and a secured one) must
have a row, every ``internal`` / ``default`` row a port, and each port must sit on the
network its row names (``internal``: ``nomad.internal_network``; ``default``: Nomad's
default network). Rows on ``loopback`` are listeners that are not Nomad ports.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from caravan.nomad import jobs as nomad
from caravan.nomad.monitoring_jobs import grafana_start_script
from caravan.spec import PlatformSpec, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[3]
ROW = re.compile(r"^\| `(?P<job>[\w<>-]+)` / `(?P<group>[\w-]+)` \| (?P<port>[^|]+) \| "
                 r"(?P<net>internal|default|loopback) \|")
EXAMPLE = load_spec(ROOT / "examples" / "platform.yaml")
MTLS = parse_spec({
    "models": [{"name": "a", "engine": {"model": "m"}}],
    "nomad": {"internal_network": "cluster"},
    "security": {
        "api_keys": {"file": "/k"},
        "xds_tls": {"cert_file": "c", "key_file": "k", "ca_file": "a", "client_ca_file": "a",
                    "client_cert_file": "c", "client_key_file": "k"},
        "upstream_tls": {"ca_file": "a", "cert_file": "c", "key_file": "k"}}})


def table() -> dict[tuple[str, str, str], str]:
    text = (ROOT / "docs" / "security.md").read_text()
    body = text.split("<!-- port-table:begin -->")[1].split("<!-- port-table:end -->")[0]
    rows: dict[tuple[str, str, str], str] = {}
    for line in body.splitlines():
        m = ROW.match(line)
        if m is None:
            continue
        label = re.match(r"`(\w+)`", m["port"])
        key = (m["job"], m["group"], label[1] if label else m["port"].strip())
        assert key not in rows, f"two rows for {key}"
        rows[key] = m["net"]
    return rows


def rendered(spec: PlatformSpec) -> dict[tuple[str, str, str], str | None]:
    out: dict[tuple[str, str, str], str | None] = {}
    for job in nomad.all_jobs(spec):
        name = "triton-<model>" if job.id.startswith("triton-") else job.id
        for g in job.groups:
            for p in g.network.ports if g.network is not None else ():
                out[(name, g.name, p.label)] = p.host_network
    return out


@pytest.mark.parametrize("spec", [EXAMPLE, MTLS], ids=["example", "secured"])
def test_every_port_has_a_row_on_its_network(spec: PlatformSpec) -> None:
    rows = table()
    ports = rendered(spec)
    nomad_rows = {k: v for k, v in rows.items() if v != "loopback"}
    assert set(ports) == set(nomad_rows), "docs/security.md port table vs rendered jobs"
    for key, host_network in ports.items():
        want = spec.nomad.internal_network if rows[key] == "internal" else None
        assert host_network == want, key


def test_only_envoys_ingress_is_on_the_default_network() -> None:
    assert [k for k, v in table().items() if v == "default"] == [("envoy", "envoy", "ingress")]


def test_monitoring_listens_on_the_internal_address_without_prometheus_lifecycle() -> None:
    jobs = {j.id: j for j in nomad.all_jobs(EXAMPLE)}
    (prom,) = jobs["prometheus"].groups[0].tasks
    assert "--web.listen-address=${NOMAD_ADDR_http}" in prom.config.args
    assert not [a for a in prom.config.args if "lifecycle" in a or "0.0.0.0" in a]
    (graf,) = jobs["grafana"].groups[0].tasks
    assert ("GF_SERVER_HTTP_ADDR", "${NOMAD_IP_http}") in graf.env
    assert graf.config.entrypoint == ("/bin/sh", "-c")
    assert graf.config.args == (grafana_start_script(),)
    assert "${" not in graf.config.args[0]  # Nomad would interpolate the password in


@pytest.mark.parametrize(("password", "starts"), [
    (None, False), ("", False), ("admin", False), ("s3cret-Admin-pw", True)])
def test_grafana_refuses_to_start_without_an_admin_password(
        tmp_path: Path, password: str | None, starts: bool) -> None:
    import subprocess

    marker = tmp_path / "started"
    env = {"PATH": "/usr/bin:/bin"}
    if password is not None:
        env["GF_SECURITY_ADMIN_PASSWORD"] = password
    run = subprocess.run(["/bin/sh", "-c", grafana_start_script(f"touch {marker}")], env=env,
                         capture_output=True, text=True, timeout=10)
    assert marker.exists() is starts
    assert (run.returncode == 0) is starts
    if not starts:
        assert run.returncode == 78
        assert "nomad var put nomad/jobs/grafana GF_SECURITY_ADMIN_PASSWORD=" in run.stderr
