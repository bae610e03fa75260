"""``caravan panels``: a clear error and exit 1 when Prometheus is unreachable; bad flags name the flag."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from caravan.cli import app
from caravan.local.process import free_port


def test_unreachable_prometheus_is_one_clear_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["panels", "--model", "m", "--prometheus", url,
                                      "--out", str(tmp_path / "p.png")])
    assert result.exit_code == 1
    assert f"Prometheus at {url} unreachable" in result.output
    assert not (tmp_path / "p.png").exists()


def test_bad_window_names_the_flag(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["panels", "--model", "m", "--window-s", "0"])
    assert result.exit_code == 2
    assert "--window-s" in result.output
