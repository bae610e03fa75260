"""A real Prometheus on a free loopback port, for the observability tests (helper, not a test).

Started as an owned child process (``ChildProcess``), stopped by PID on exit.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from caravan.local.launch import wait_until
from caravan.local.process import ChildProcess, free_port
from caravan.local.prometheus import prometheus_argv

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def get_json(
    url: str, params: dict[str, str] | None = None, timeout_s: float = 10.0
) -> dict[str, Any]:
    """GET ``url`` and parse the JSON body, also for Prometheus' 4xx/5xx error bodies."""
    full = url + ("?" + urllib.parse.urlencode(params) if params else "")
    try:
        with urllib.request.urlopen(full, timeout=timeout_s) as resp:
            body = resp.read()
    except urllib.error.HTTPError as err:
        body = err.read()
    doc: dict[str, Any] = json.loads(body)
    return doc


def _ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
        return bool(resp.status == 200)


@contextmanager
def running_prometheus(workdir: Path, config_text: str, timeout_s: float = 30.0) -> Iterator[str]:
    """Start Prometheus with ``config_text`` (written to ``workdir/prometheus.yml``; relative
    paths in it resolve against ``workdir``); yield its base URL; stop it by PID."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(config_text)
    port = free_port()
    argv = prometheus_argv(PROMETHEUS, config, workdir / "data", port)
    with ChildProcess("prometheus", argv, log_path=workdir / "prometheus.log") as proc:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ready(url), timeout_s, "prometheus ready", every_s=0.1, procs=[proc])
        yield url
