"""The rendered Prometheus files pass the real promtool (check config, check rules, test rules),
and the checked-in prometheus/ directory is what `render` produces for examples/platform.yaml."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from caravan.observability import prometheus as prom
from caravan.observability.alerts import ALERTS
from caravan.spec import PlatformSpec, load_spec

ROOT = Path(__file__).resolve().parents[3]
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
pytestmark = pytest.mark.skipif(
    not Path(PROMTOOL).exists(), reason="promtool not installed (apt-get install prometheus)"
)

# Documented consul_sd_config fields (Prometheus configuration docs, plus the HTTP client config).
CONSUL_SD_FIELDS = {
    "server", "token", "datacenter", "namespace", "partition", "scheme", "username", "password",
    "services", "tags", "node_meta", "tag_separator", "allow_stale", "refresh_interval", "filter",
    "basic_auth", "authorization", "oauth2", "proxy_url", "tls_config", "follow_redirects",
    "enable_http2",
}


@pytest.fixture(scope="module")
def spec() -> PlatformSpec:
    return load_spec(ROOT / "examples" / "platform.yaml")


@pytest.fixture(scope="module")
def rendered(spec: PlatformSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rendered")
    for rel, text in prom.render(spec).items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    return out / "prometheus"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_check_rules(rendered: Path) -> None:
    files = ("rules/caravan-recording.yml", "rules/caravan-alerts.yml")
    res = promtool("check", "rules", *files, cwd=rendered)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in res.stdout


def test_every_alert_unit_test_passes(rendered: Path) -> None:
    files = sorted(p.name for p in (rendered / "tests").glob("*.yml"))
    assert files == sorted(f"{a.name}.yml" for a in ALERTS)
    res = promtool("test", "rules", *[f"tests/{f}" for f in files], cwd=rendered)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("SUCCESS") == len(files)


def test_check_config_with_static_stand_ins_for_consul(rendered: Path) -> None:
    """Debian's Prometheus is built without Consul SD, so its promtool rejects
    consul_sd_configs. The Consul blocks are checked against the documented fields;
    the rest (relabel regexes, rule files, globals) by promtool with each Consul block
    replaced by a static one."""
    doc = yaml.safe_load((rendered / "prometheus.yml").read_text())
    for job in doc["scrape_configs"]:
        for sd in job.pop("consul_sd_configs"):
            unknown = set(sd) - CONSUL_SD_FIELDS
            assert not unknown, f"{job['job_name']}: unknown consul_sd fields {unknown}"
            assert sd["services"], job["job_name"]
        job["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
    (rendered / "prometheus-static.yml").write_text(yaml.safe_dump(doc))
    res = promtool("check", "config", "prometheus-static.yml", cwd=rendered)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 2 rule files found" in res.stdout


def test_static_config_passes_promtool(rendered: Path) -> None:
    text = prom.static_config(
        "127.0.0.1:9901", {"llama-3-8b": ["127.0.0.1:9301", "127.0.0.1:9302"]},
        control_plane="127.0.0.1:18001", autoscaler="127.0.0.1:18002",
        rule_files=["rules/caravan-recording.yml", "rules/caravan-alerts.yml"],
    )
    (rendered / "local.yml").write_text(text)
    res = promtool("check", "config", "local.yml", cwd=rendered)
    assert res.returncode == 0, res.stdout + res.stderr


def test_checked_in_files_are_current(spec: PlatformSpec) -> None:
    stale = [rel for rel, text in prom.render(spec).items()
             if not (ROOT / rel).exists() or (ROOT / rel).read_text() != text]
    assert not stale, f"re-render with `caravan render` (or render_checked_in.py): {stale}"
